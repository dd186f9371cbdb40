"""Suffix-only transformer blocks: recompute positions ``start..`` over the clean prefix's keys and values.

An ablation whose first changed position is ``p`` leaves every position before ``p`` exactly as
in the clean pass (causal attention), in every layer. So a block only needs the suffix's
residual and, for attention, the clean keys and values of the prefix, cached once per prompt
group (docs/sweep.md#suffix-only-recompute). The last block's output is read at one position
only, so there the query, attention output and MLP run for that position alone (its keys and
values still span the whole suffix).

The blocks are transformer_lens's own modules (``ln1``, ``attn`` projections and score
functions, ``ln2``, ``mlp``), called piecewise; :func:`supports_suffix` names the block
layouts this covers (GPT-2-style pre-norm blocks with absolute position embeddings). Other
layouts use the full recompute.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformer_lens.utilities.attention import simple_attn_linear as _linear_heads

_UNSUPPORTED_FLAGS = (
    "use_attn_in", "use_split_qkv_input", "use_normalization_before_and_after", "attn_only",
    "parallel_attn_mlp", "use_attn_result", "use_qk_norm", "use_logn_attn", "use_attention_sinks", "load_in_4bit",
)  # fmt: skip


def supports_suffix(cfg: Any) -> bool:
    """Whether the model's blocks are a layout :func:`block_suffix` reproduces exactly."""
    if getattr(cfg, "positional_embedding_type", "standard") != "standard":
        return False  # rotary/alibi/shortformer add position terms inside attention
    if any(getattr(cfg, flag, False) for flag in _UNSUPPORTED_FLAGS):
        return False
    if getattr(cfg, "clip_qkv", None) is not None or getattr(cfg, "attention_dir", "causal") != "causal":
        return False
    if getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads):
        return False
    arch = getattr(cfg, "original_architecture", None) or ""
    return not arch.startswith(("Olmo", "Bert", "T5"))


def keys_values(block: Any, resid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values [batch, pos, heads, d_head] a block's attention computes from its input ``resid``."""
    h = block.ln1(resid)
    return _linear_heads(h, block.attn.W_K, block.attn.b_K), _linear_heads(h, block.attn.W_V, block.attn.b_V)


def block_suffix(
    block: Any,
    x: torch.Tensor,
    start: int,
    past_k: torch.Tensor,
    past_v: torch.Tensor,
    query_at: torch.Tensor | None = None,
) -> torch.Tensor:
    """One block on the suffix ``x`` [batch, s, d_model] (absolute positions ``start..start+s-1``).

    ``past_k``/``past_v`` [batch, start, heads, d_head] are the prefix's keys and values. With
    ``query_at`` [batch] (a suffix index per row) only that position's output is computed,
    [batch, 1, d_model]; otherwise the whole suffix's, [batch, s, d_model].

    The block's hook points fire as in ``block.forward`` (``hook_resid_pre``, ``attn.hook_z``,
    ``hook_mlp_in`` when enabled, ``hook_mlp_out``, ``hook_resid_post``; those inside ``ln1``,
    ``ln2`` and ``mlp`` too), on the suffix's values (one position after ``query_at``): the mixed-
    site sweep edits and reads sites through them (ingest/mixed.py). Without hooks they are identities.
    """
    attn = block.attn
    x = block.hook_resid_pre(x)
    h = block.ln1(x)
    k = torch.cat([past_k, _linear_heads(h, attn.W_K, attn.b_K)], 1)
    v = torch.cat([past_v, _linear_heads(h, attn.W_V, attn.b_V)], 1)
    n_keys = k.shape[1]
    keys = torch.arange(n_keys, device=x.device)
    if query_at is None:
        q_pos = start + torch.arange(x.shape[1], device=x.device)
        allowed = (keys[None, :] <= q_pos[:, None])[None, None]  # [1, 1, s, keys]
        resid, hq = x, h
    else:
        rows = torch.arange(x.shape[0], device=x.device)
        resid, hq = x[rows, query_at][:, None], h[rows, query_at][:, None]
        allowed = (keys[None, :] <= (start + query_at)[:, None])[:, None, None]  # [batch, 1, 1, keys]
    q = _linear_heads(hq, attn.W_Q, attn.b_Q)
    scores = attn.calculate_attention_scores(q, k)  # [batch, heads, q, keys]; scale and soft cap as the model's
    scores = torch.where(allowed, scores, attn.IGNORE.to(scores.device))
    pattern = F.softmax(scores, dim=-1)
    pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern).to(v.dtype)
    z = attn.calculate_z_scores(v, pattern)  # fires attn.hook_z itself
    w_o = attn.W_O.reshape(-1, attn.W_O.shape[-1]).T  # [d_model, heads * d_head]
    attn_out = F.linear(z.reshape(z.shape[0], z.shape[1], -1), w_o, attn.b_O)
    mid = resid + attn_out
    mlp_in = block.hook_mlp_in(mid.clone()) if block.cfg.use_hook_mlp_in else mid
    return block.hook_resid_post(mid + block.hook_mlp_out(block.mlp(block.ln2(mlp_in))))
