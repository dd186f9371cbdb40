"""Small random models and SAEs built locally, for tests, benchmarks and offline checks.

No hub access is needed: a random GPT-2-style model (as a HookedSAETransformer, or saved as
a Hugging Face folder with its own byte-level BPE tokenizer) and random sae_lens SAEs whose
encoder bias is calibrated so each feature fires on a chosen fraction of tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TOKENIZER_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Copyright (C) 2024 by the authors of this file.",
    "Foreign Direct Investment (FDI) rose in the third quarter.",
    "When Mary and John went to the store, John gave a drink to Mary.",
    "A sparse autoencoder reads the residual stream of a transformer.",
    "Parentheses (like these) and brackets [like these] come in pairs.",
]
SPECIAL = "<|endoftext|>"


def make_tokenizer(vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer (GPT2TokenizerFast) trained on a few sentences."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TOKENIZER_TEXT * 4, vocab_size=vocab_size, min_frequency=1, special_tokens=[SPECIAL])
    return GPT2TokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=SPECIAL, eos_token=SPECIAL, unk_token=SPECIAL
    )


def save_hf_model(
    folder: str | Path,
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    n_ctx: int = 32,
    seed: int = 0,
    vocab_size: int = 320,
) -> Path:
    """Save a random GPT-2-family model and its tokenizer as a Hugging Face folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    tokenizer = make_tokenizer(vocab_size)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_ctx,
        n_ctx=n_ctx,  # transformer_lens reads it; transformers 5 no longer writes it itself
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    # Larger-than-default weights so that ablations move things visibly in a tiny model.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_model(
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    d_mlp: int | None = None,
    d_vocab: int = 64,
    n_ctx: int = 32,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A random HookedSAETransformer without a tokenizer (feed it token ids)."""
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        d_mlp=d_mlp or 4 * d_model,
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        act_fn="gelu_new",
        normalization_type="LN",
        seed=seed,
        device=device,
        dtype=dtype,
    )
    model = HookedSAETransformer(cfg)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def random_tokens(n: int, length: int, d_vocab: int, bos: int | None, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(1 if bos == 0 else 0, d_vocab, (n, length), generator=g)
    if bos is not None:
        toks[:, 0] = bos
    return toks


def sample_residuals(model: Any, hook_name: str, tokens: torch.Tensor) -> torch.Tensor:
    """Activation vectors [n_tokens, width] at ``hook_name`` for a batch of token ids (the residual,
    or any other hook; hook_z's heads flattened ``(n_heads d_head)`` as sae_lens does)."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(next(model.parameters()).device), names_filter=[hook_name])
    x = cache[hook_name]
    return x.reshape(x.shape[0] * x.shape[1], -1)


def make_sae(
    hook_name: str,
    d_in: int,
    d_sae: int,
    calibration: torch.Tensor,
    density: float,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
    model_name: str = "synthetic",
    reshape_activations: str = "none",
) -> Any:
    """A random standard (ReLU) sae_lens SAE (``reshape_activations="hook_z"`` for a hook_z SAE).

    Encoder rows are random unit directions; each feature's encoder bias is set to the
    ``1 - density`` quantile of its pre-activation over ``calibration`` residuals (taken
    without BOS), so it fires on about ``density`` of tokens.
    """
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

    g = torch.Generator().manual_seed(seed)
    cfg = StandardSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        dtype=dtype,
        device=device,
        metadata=SAEMetadata(hook_name=hook_name, prepend_bos=True, model_name=model_name, context_size=128),
        reshape_activations=reshape_activations,
    )
    sae = StandardSAE(cfg)
    w_dec = torch.randn(d_sae, d_in, generator=g)
    w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
    x = calibration.detach().to("cpu", torch.float32)
    b_dec = x.mean(0)
    w_enc = w_dec.T.clone()
    pre = (x - b_dec) @ w_enc
    q = torch.quantile(pre, 1.0 - density, dim=0) if pre.shape[0] * d_sae < 2**24 else _chunked_quantile(pre, 1.0 - density)
    with torch.no_grad():
        sae.W_dec.copy_(w_dec * x.norm(dim=-1).mean() * 0.1)
        sae.W_enc.copy_(w_enc)
        sae.b_dec.copy_(b_dec)
        sae.b_enc.copy_(-q)
    sae = sae.to(device=device, dtype=getattr(torch, dtype))
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


def _chunked_quantile(pre: torch.Tensor, q: float, chunk: int = 2048) -> torch.Tensor:
    return torch.cat([torch.quantile(pre[:, i : i + chunk], q, dim=0) for i in range(0, pre.shape[1], chunk)])


def make_transcoder(
    hook_name: str, hook_name_out: str, d_in: int, d_sae: int, d_out: int, calibration: torch.Tensor,
    density: float, seed: int = 0, model_name: str = "synthetic",
) -> Any:  # fmt: skip
    """A random sae_lens ``Transcoder`` reading ``hook_name`` and writing ``hook_name_out``; its
    encoder is calibrated on ``calibration`` inputs like :func:`make_sae`'s."""
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.transcoder import Transcoder, TranscoderConfig

    g = torch.Generator().manual_seed(seed)
    meta = SAEMetadata(hook_name=hook_name, hook_name_out=hook_name_out, prepend_bos=True, model_name=model_name)
    tc = Transcoder(TranscoderConfig(d_in=d_in, d_sae=d_sae, d_out=d_out, apply_b_dec_to_input=False, metadata=meta))
    w_enc = torch.randn(d_in, d_sae, generator=g)
    w_enc = w_enc / w_enc.norm(dim=0, keepdim=True)
    x = calibration.detach().float()
    pre = x @ w_enc
    with torch.no_grad():
        tc.W_enc.copy_(w_enc)
        tc.b_enc.copy_(-torch.quantile(pre, 1.0 - density, dim=0))
        tc.W_dec.copy_(torch.randn(d_sae, d_out, generator=g) * 0.1)
    tc.eval()
    for p in tc.parameters():
        p.requires_grad_(False)
    return tc
