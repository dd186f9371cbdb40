"""A tiny model and SAEs whose answer is known by construction.

One GPT-2 block whose attention and MLP write nothing, so the residual stream is just the
token embedding and positions never mix. Upstream SAE feature 0.3 fires only on the trigger
token and writes direction v; downstream feature 1.5 reads v (and the trigger), so ablating
0.3 lowers 1.5 linearly in the coefficient; the token OUT's embedding (= unembedding, tied) is
along v, so ablating 0.3 also suppresses OUT. Every other feature is random.

1.5 is an AND gate (negative bias): it needs both the trigger and 0.3's direction, so adding
0.3 to unrelated text (a noise null by injection) barely moves it; the planted edge is specific to
the trigger's context, as a real circuit's edge would be.
"""

from __future__ import annotations

from pathlib import Path

import torch

V, D = 24, 32
TRIGGER, OUT = 7, 3
UP, DOWN = 3, 5
WORDS = ["<|endoftext|>"] + [f"w{i}" for i in range(1, V)]


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token=WORDS[0]))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=WORDS[0], eos_token=WORDS[0], unk_token=WORDS[0])


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def build(root: Path) -> dict:
    """Write the model folder and two SAE folders under ``root``; return their paths."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from featuregraph.ingest.config import ModelSpec
    from featuregraph.ingest.loading import load_model
    from featuregraph.ingest.synthetic import make_sae

    g = torch.Generator().manual_seed(0)
    config = GPT2Config(vocab_size=V, n_positions=16, n_ctx=16, n_embd=D, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(config)
    with torch.no_grad():
        hf.transformer.wte.weight.copy_(torch.randn(V, D, generator=g) / D**0.5)
        v = _unit(torch.randn(D, generator=g))
        hf.transformer.wte.weight[OUT] = 5.0 * v
        # The trigger leans towards OUT, so OUT is a likely next token after it.
        hf.transformer.wte.weight[TRIGGER] = _unit(torch.randn(D, generator=g)) + 0.7 * v
        hf.transformer.wpe.weight.zero_()
        block = hf.transformer.h[0]
        for lin in (block.attn.c_proj, block.mlp.c_proj):
            lin.weight.zero_()
            lin.bias.zero_()
    hf.save_pretrained(root / "model")
    _tokenizer().save_pretrained(root / "model")

    model, _ = load_model(ModelSpec(str(root / "model")), {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}, "cpu", "float32")
    emb = model.W_E.detach()
    e_t, v = _unit(emb[TRIGGER]), _unit(emb[OUT])
    calib = emb[[i for i in range(1, V) if i not in (TRIGGER, OUT)]].repeat(8, 1)

    up = make_sae("blocks.0.hook_resid_pre", D, 8, calib, 0.3, seed=1, model_name="planted")
    down = make_sae("blocks.0.hook_resid_post", D, 8, calib, 0.3, seed=2, model_name="planted")
    with torch.no_grad():
        for sae in (up, down):
            sae.b_dec.zero_()
        up.W_enc[:, UP] = e_t
        up.b_enc[UP] = -0.5 * emb[TRIGGER].norm()
        up.W_dec[UP] = v
        down.W_enc[:, DOWN] = 2.0 * v + 3.0 * e_t
        down.b_enc[DOWN] = -2.5
    up.save_model(root / "up")
    down.save_model(root / "down")
    return {"model": root / "model", "saes": [root / "up", root / "down"]}


def sentences(n: int, length: int, seed: int, end_with_trigger: bool) -> list[str]:
    """Random word sequences, never containing OUT; TRIGGER only as the last word (if asked)."""
    g = torch.Generator().manual_seed(seed)
    pool = [i for i in range(1, V) if i not in (TRIGGER, OUT)]
    out = []
    for _ in range(n):
        words = [WORDS[pool[int(j)]] for j in torch.randint(0, len(pool), (length,), generator=g)]
        if end_with_trigger:
            words[-1] = WORDS[TRIGGER]
        out.append(" ".join(words))
    return out
