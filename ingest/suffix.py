"""Suffix-only transformer blocks: recompute positions ``start..`` over the clean prefix's keys and values.

An ablation whose first changed position is ``p`` leaves every position before ``p`` exactly as
in the clean pass (causal attention), in every layer. So a block only needs the suffix's
residual and, for attention, the clean keys and values of the prefix, cached once per prompt
group (docs/sweep.md#suffix-only-recompute). The last block's output is read at one position
only, so there the query, attention output and MLP run for that position alone (its keys and
values still span the whole suffix). In the block the ablation enters, a position where the
feature was inactive has its clean residual, so its clean queries, keys and values are reused
(``reuse``) and only the changed positions are projected.

The prefix is never concatenated with the suffix: scores against the prefix and against the
suffix are computed apart and softmaxed together, and when every row of a batch comes from one
prompt the prefix is shared (one key/value set for all rows) instead of gathered per row.

The blocks are transformer_lens's own modules' weights (``ln1``, ``attn``, ``ln2``, ``mlp``);
with ``fused`` the norms and the MLP run as single torch kernels when their modules are the
plain ones (LayerNorm, MLP with a GELU/ReLU/SiLU), else the modules themselves are called (so
their hook points fire, which the mixed-site sweep needs). :func:`supports_suffix` names the
block layouts this covers (GPT-2-style pre-norm blocks with absolute position embeddings).
Other layouts use the full recompute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

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
    if (getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0:
        return False
    if getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads):
        return False
    arch = getattr(cfg, "original_architecture", None) or ""
    return not arch.startswith(("Olmo", "Bert", "T5"))


@dataclass(frozen=True)
class BlockWeights:
    """One block's attention projections laid out for single matmuls: ``w_qkv`` [3 * heads * d_head,
    d_model] (queries, keys, values stacked), ``w_o`` [d_model, heads * d_head]."""

    w_qkv: torch.Tensor
    b_qkv: torch.Tensor
    w_o: torch.Tensor
    b_o: torch.Tensor

    @classmethod
    def of(cls, block: Any) -> "BlockWeights":
        a = block.attn
        w = torch.cat([m.permute(0, 2, 1).reshape(-1, m.shape[1]) for m in (a.W_Q, a.W_K, a.W_V)])
        b = torch.cat([v.reshape(-1) for v in (a.b_Q, a.b_K, a.b_V)])
        return cls(w.contiguous(), b, a.W_O.reshape(-1, a.W_O.shape[-1]).T.contiguous(), a.b_O)


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    return t.reshape(*t.shape[:-1], n_heads, -1)


def qkv(block: Any, w: BlockWeights, resid: torch.Tensor, fused: bool = True) -> tuple[torch.Tensor, ...]:
    """Queries, keys and values [..., heads, d_head] a block's attention computes from its input ``resid``."""
    out = F.linear(_norm(block.ln1, resid, fused), w.w_qkv, w.b_qkv)
    return tuple(_heads(t, block.cfg.n_heads) for t in out.chunk(3, -1))


def _norm(module: Any, x: torch.Tensor, fused: bool) -> torch.Tensor:
    from transformer_lens.components import LayerNorm

    if fused and type(module) is LayerNorm:
        return F.layer_norm(x, (x.shape[-1],), module.w, module.b, module.eps)
    return module(x) if x.dim() == 3 else module(x[None])[0]


def _mlp(block: Any, x: torch.Tensor, fused: bool) -> torch.Tensor:
    from transformer_lens.components import MLP
    from transformer_lens.utilities.activation_functions import gelu_new

    mlp = block.mlp
    act = {gelu_new: lambda t: F.gelu(t, approximate="tanh"), F.gelu: F.gelu, F.relu: F.relu, F.silu: F.silu}
    if not (fused and type(mlp) is MLP and mlp.act_fn in act):
        return mlp(x)
    flat = x.reshape(-1, x.shape[-1])
    hidden = act[mlp.act_fn](torch.addmm(mlp.b_in, flat, mlp.W_in))
    return torch.addmm(mlp.b_out, hidden, mlp.W_out).reshape(*x.shape[:-1], -1)


def _prefix_scores(q: torch.Tensor, past_k: torch.Tensor) -> torch.Tensor:
    """``q`` [b, nq, h, d] against ``past_k`` [b or 1, start, h, d]: [b, h, nq, start]. A shared prefix
    (first dim 1) is one matmul per head over all rows' queries, not a copy per row."""
    b, nq, h, d = q.shape
    if past_k.shape[0] == 1 and b > 1:
        folded = q.permute(2, 0, 1, 3).reshape(h, b * nq, d) @ past_k[0].permute(1, 2, 0)
        return folded.reshape(h, b, nq, -1).transpose(0, 1)
    return q.transpose(1, 2) @ past_k.permute(0, 2, 3, 1)


def _prefix_mix(pattern: torch.Tensor, past_v: torch.Tensor) -> torch.Tensor:
    """``pattern`` [b, h, nq, start] over ``past_v`` [b or 1, start, h, d]: [b, nq, h, d]."""
    b, h, nq, start = pattern.shape
    if past_v.shape[0] == 1 and b > 1:
        folded = pattern.transpose(0, 1).reshape(h, b * nq, start) @ past_v[0].transpose(0, 1)
        return folded.reshape(h, b, nq, -1).permute(1, 2, 0, 3)
    return (pattern @ past_v.transpose(1, 2)).transpose(1, 2)


def attend(
    attn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor,
    query_at: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """Causal attention of suffix queries ``q`` [b, nq, h, d] over the prefix ``past_k/past_v`` [b or 1,
    start, h, d] and the suffix ``k/v`` [b, s, h, d]; returns ``z`` [b, nq, h, d] (through ``hook_z``).

    ``query_at`` None: the queries are the whole suffix (nq = s); else [b], each row's one query's
    suffix index. Same scale, masking value, softmax and NaN rule as the model's attention."""
    s = k.shape[1]
    keys = torch.arange(s, device=q.device)
    if query_at is None:
        allowed = (keys[None, :] <= keys[:, None])[None, None]  # [1, 1, s, s]
    else:
        allowed = (keys[None, :] <= query_at[:, None])[:, None, None]  # [b, 1, 1, s]
    own = torch.where(allowed, (q.transpose(1, 2) @ k.permute(0, 2, 3, 1)) / attn.attn_scale, attn.IGNORE.to(q.device))
    start = past_k.shape[1]
    scores = torch.cat([_prefix_scores(q, past_k) / attn.attn_scale, own], -1) if start else own
    pattern = F.softmax(scores, dim=-1)
    pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern).to(v.dtype)
    z = (pattern[..., start:] @ v.transpose(1, 2)).transpose(1, 2)
    if start:
        z = z + _prefix_mix(pattern[..., :start], past_v)
    return attn.hook_z(z)


def block_suffix(
    block: Any,
    w: BlockWeights,
    x: torch.Tensor,
    past_k: torch.Tensor,
    past_v: torch.Tensor,
    query_at: torch.Tensor | None = None,
    reuse: tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """One block on the suffix ``x`` [batch, s, d_model] (absolute positions ``start..start+s-1``).

    ``past_k``/``past_v`` [batch or 1, start, heads, d_head] are the prefix's clean keys and values
    (first dim 1: shared by every row). With ``query_at`` [batch] (a suffix index per row) only that
    position's output is computed, [batch, 1, d_model]; otherwise the whole suffix's, [batch, s, d_model].

    ``reuse = (q, k, v, changed)``: the suffix's clean queries, keys and values [batch, s, heads,
    d_head] (owned by the call: written in place) and the (row, position) indices where ``x``
    differs from the clean residual; only those are normed and projected.

    The block's hook points fire as in ``block.forward`` (``hook_resid_pre``, ``attn.hook_z``,
    ``hook_mlp_in`` when enabled, ``hook_mlp_out``, ``hook_resid_post``; those inside ``ln1``,
    ``ln2`` and ``mlp`` too unless ``fused``), on the suffix's values (one position after ``query_at``):
    the mixed-site sweep edits and reads sites through them (ingest/mixed.py). Without hooks they are identities.
    """
    n_heads, hd = block.cfg.n_heads, w.w_o.shape[1]
    x = block.hook_resid_pre(x)
    rows = torch.arange(x.shape[0], device=x.device) if query_at is not None else None
    if reuse is not None:
        q, k, v, changed = reuse
        fresh = F.linear(_norm(block.ln1, x[changed], fused), w.w_qkv, w.b_qkv).chunk(3, -1)
        for clean, new in zip((q, k, v), fresh, strict=True):
            clean.index_put_(changed, _heads(new, n_heads))
        if query_at is not None:
            q = q[rows, query_at][:, None]
    else:
        h = _norm(block.ln1, x, fused)
        if query_at is None:
            q, k, v = (_heads(t, n_heads) for t in F.linear(h, w.w_qkv, w.b_qkv).chunk(3, -1))
        else:
            k, v = (_heads(t, n_heads) for t in F.linear(h, w.w_qkv[hd:], w.b_qkv[hd:]).chunk(2, -1))
            q = _heads(F.linear(h[rows, query_at][:, None], w.w_qkv[:hd], w.b_qkv[:hd]), n_heads)
    resid = x if query_at is None else x[rows, query_at][:, None]
    z = attend(block.attn, q, k, v, past_k, past_v, query_at)
    mid = resid + F.linear(z.reshape(z.shape[0], z.shape[1], -1), w.w_o, w.b_o)
    mlp_in = block.hook_mlp_in(mid.clone()) if block.cfg.use_hook_mlp_in else mid
    return block.hook_resid_post(mid + block.hook_mlp_out(_mlp(block, _norm(block.ln2, mlp_in, fused), fused)))
