"""Tiny random models with attention-output (hook_z) and residual SAEs, for the DFA tests.

Every bias the DFA identity has a term for is made non-zero (value bias, ln1's weight and bias,
the SAEs' b_dec and b_enc), so a forgotten term fails a test.
"""

from __future__ import annotations

from typing import Any

import torch

from featuregraph.ingest import synthetic as syn

LAYER = 1
N_HEADS, D_MODEL = 4, 32
D_SAE = 48


def tiny_model(norm: str = "LN", seed: int = 0) -> Any:
    """A 2-block random HookedSAETransformer with LayerNorm kind ``norm`` and random biases."""
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=D_MODEL, n_heads=N_HEADS, d_head=D_MODEL // N_HEADS, d_mlp=64, d_vocab=64, n_ctx=32,
        act_fn="gelu_new", normalization_type=norm, seed=seed, dtype=torch.float32,
    )  # fmt: skip
    model = HookedSAETransformer(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("b_V", "b_Q", "b_K", "b_O", ".b")):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".w"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def tokens(n: int = 9, seed: int = 0) -> torch.Tensor:
    return syn.random_tokens(1, n, 64, bos=0, seed=seed)


def _z_samples(model: Any) -> torch.Tensor:
    toks = syn.random_tokens(8, 12, 64, bos=0, seed=99)
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=[f"blocks.{LAYER}.attn.hook_z"])
    return cache[f"blocks.{LAYER}.attn.hook_z"].reshape(-1, D_MODEL)


def attention_sae(
    model: Any, architecture: str = "standard", seed: int = 0, rescale: bool = False, reshape: str = "hook_z"
) -> Any:
    """A random hook_z SAE of ``architecture`` (standard, jumprelu, topk) on block LAYER, built the
    way sae_lens builds the gpt2-small-hook-z-kk ones (reshape_activations = hook_z), with an
    encoder bias calibrated so each feature fires on about a quarter of tokens. ``reshape="none"``:
    the same SAE taking the heads already flattened."""
    from sae_lens import (
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(
        hook_name=f"blocks.{LAYER}.attn.hook_z", prepend_bos=True, model_name="tiny", context_size=32
    )
    common = dict(
        d_in=D_MODEL, d_sae=D_SAE, dtype="float32", device="cpu", metadata=meta, reshape_activations=reshape
    )
    if architecture == "standard":
        sae = StandardSAE(StandardSAEConfig(**common))
    elif architecture == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(**common))
    elif architecture == "topk":
        sae = TopKSAE(TopKSAEConfig(k=6, rescale_acts_by_decoder_norm=rescale, **common))
    else:
        raise ValueError(architecture)
    g = torch.Generator().manual_seed(seed)
    x = _z_samples(model)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(D_MODEL, D_SAE, generator=g) / D_MODEL**0.5)
        sae.W_dec.copy_(torch.randn(D_SAE, D_MODEL, generator=g) * (0.5 + torch.rand(D_SAE, 1, generator=g)))
        sae.b_dec.copy_(x.mean(0) + 0.1 * torch.randn(D_MODEL, generator=g))
        pre = (x - sae.b_dec) @ sae.W_enc
        sae.b_enc.copy_(-torch.quantile(pre, 0.75, dim=0) + 0.05 * torch.randn(D_SAE, generator=g))
        if architecture == "jumprelu":
            sae.threshold.copy_(0.02 + 0.05 * torch.rand(D_SAE, generator=g))
    sae.eval()
    for p in sae.parameters():
        p.requires_grad_(False)
    return sae


def resid_sae(model: Any, seed: int = 1, topk_rescaled: bool = False) -> Any:
    """A random standard SAE on blocks.LAYER.hook_resid_pre (the residual DFA recurses into);
    ``topk_rescaled``: the same weights in a TopK SAE that rescales by decoder norms (decoder
    rows of uneven norms, so the rescaling matters)."""
    from sae_lens import TopKSAE, TopKSAEConfig

    hook = f"blocks.{LAYER}.hook_resid_pre"
    x = syn.sample_residuals(model, hook, syn.random_tokens(8, 12, 64, bos=0, seed=98))
    sae = syn.make_sae(hook, D_MODEL, 64, x, 0.15, seed=seed, model_name="tiny")
    with torch.no_grad():
        sae.b_dec.add_(0.2)  # not the data mean: its term must matter
    if not topk_rescaled:
        return sae
    topk = TopKSAE(
        TopKSAEConfig(
            k=8, rescale_acts_by_decoder_norm=True, d_in=D_MODEL, d_sae=64, metadata=sae.cfg.metadata
        )
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(topk, name).copy_(getattr(sae, name))
        topk.W_dec.mul_(0.5 + torch.rand(64, 1, generator=g))
    return topk.eval()


def sae_pre_activation(sae: Any, z: torch.Tensor) -> torch.Tensor:
    """sae_lens' own pre-activation of a hook_z vector z [H, d_head] (hook_sae_acts_pre), with a
    TopK SAE's decoder-norm rescaling applied the way its encode applies it."""
    _, cache = sae.run_with_cache(z.unsqueeze(0), names_filter=["hook_sae_acts_pre"])
    pre = cache["hook_sae_acts_pre"][0].to(torch.float64)
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        pre = pre * sae.W_dec.to(torch.float64).norm(dim=-1)
    return pre
