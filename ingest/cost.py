"""FLOP cost model of the sweep: the matrix products it runs, counted from their shapes.

One multiply-add is 2 FLOPs. Only matrix products are counted (projections, attention scores and
mixing, MLP, SAE encoders, unembedding): elementwise work (norms, activations, softmax, the
rank-1 ablation update) is a few percent at real shapes and is what a profiler's FLOP counter
leaves out too, so the two can be compared (tests/test_sweep_cost.py). The sweep adds to
``Sweeper.flops`` as it runs, so the count includes padding and batch shapes as executed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shape:
    """The dimensions of a transformer_lens model that set its cost."""

    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_layers: int
    gated_mlp: bool

    @classmethod
    def of(cls, cfg: Any) -> "Shape":
        return cls(
            d_model=int(cfg.d_model), n_heads=int(cfg.n_heads), d_head=int(cfg.d_head),
            d_mlp=int(cfg.d_mlp or 0), d_vocab=int(cfg.d_vocab), n_layers=int(cfg.n_layers),
            gated_mlp=bool(getattr(cfg, "gated_mlp", False)),
        )  # fmt: skip


def block_flops(s: Shape, n_q: int, n_new: int, n_keys: int, n_q_proj: int | None = None) -> int:
    """One block for one sequence: attention output and MLP at ``n_q`` positions, keys and values
    projected at ``n_new`` positions, queries at ``n_q_proj`` (default ``n_q``), each query scored
    against ``n_keys`` keys."""
    hd = s.n_heads * s.d_head
    n_q_proj = n_q if n_q_proj is None else n_q_proj
    projections = 2 * s.d_model * hd * (n_q + n_q_proj + 2 * n_new)  # O at the queries, Q, K and V where projected
    attention = 2 * 2 * s.n_heads * n_q * n_keys * s.d_head  # scores, then pattern @ V
    mlp = 2 * n_q * s.d_model * s.d_mlp * (3 if s.gated_mlp else 2)
    return projections + attention + mlp


def proj_flops(s: Shape, positions: int, n_proj: int) -> int:
    """``n_proj`` of a block's attention input projections (queries, keys, values) at ``positions`` positions."""
    return 2 * n_proj * positions * s.d_model * s.n_heads * s.d_head


def ablated_block_flops(s: Shape, rows: int, n_q: int, n_keys: int, n_changed: int) -> int:
    """The block an ablation enters, for ``rows`` rows: queries, keys and values are the clean pass's
    except at the ``n_changed`` (row, position) pairs where the ablated feature was active."""
    return rows * block_flops(s, n_q, 0, n_keys, n_q_proj=0) + proj_flops(s, n_changed, 3)


def encode_flops(s: Shape, rows: int, d_sae: int) -> int:
    """An SAE encoder (``x @ W_enc``) on ``rows`` residual vectors."""
    return 2 * rows * s.d_model * d_sae


def unembed_flops(s: Shape, rows: int) -> int:
    return 2 * rows * s.d_model * s.d_vocab


def clean_flops(s: Shape, n_prompts: int, n_pos: int, d_saes: list[int], cache_kv: bool) -> int:
    """The clean pass of ``n_prompts`` prompts padded to ``n_pos``: every block at every position, the
    unembedding and each SAE at the read position, and (suffix reuse) every block's queries, keys and values."""
    total = n_prompts * s.n_layers * block_flops(s, n_pos, n_pos, n_pos)
    total += unembed_flops(s, n_prompts) + sum(encode_flops(s, n_prompts, d) for d in d_saes)
    if cache_kv:
        total += s.n_layers * proj_flops(s, n_prompts * n_pos, 3)
    return total


def full_ablation_flops(s: Shape, layer: int, n_pos: int, next_d_sae: int | None, read_rows: int = 1) -> int:
    """One ablation without suffix reuse: blocks ``layer..`` at all ``n_pos`` positions, then the next
    SAE and the unembedding at ``read_rows`` positions per row."""
    total = (s.n_layers - layer) * block_flops(s, n_pos, n_pos, n_pos) + unembed_flops(s, read_rows)
    return total + (encode_flops(s, read_rows, next_d_sae) if next_d_sae else 0)


def suffix_ablation_flops(
    s: Shape, layer: int, start: int, read: int, next_d_sae: int | None, n_changed: int | None = None
) -> int:
    """One ablation with suffix reuse: positions ``start..read`` over a cached prefix, the ablated
    block projecting queries, keys and values at the ``n_changed`` positions where the feature was
    active (default: all), the last block at the read position only, then the next SAE and the
    unembedding there."""
    n = read - start + 1
    total = _suffix_blocks(s, layer, 1, start, read + 1, n if n_changed is None else n_changed)
    total += unembed_flops(s, 1)
    return total + (encode_flops(s, 1, next_d_sae) if next_d_sae else 0)


def _suffix_blocks(s: Shape, layer: int, rows: int, start: int, stop: int, n_changed: int) -> int:
    """Blocks ``layer..`` of a suffix batch of ``rows`` rows over positions ``start..stop-1``."""
    n, total = stop - start, 0
    for L in range(layer, s.n_layers):
        n_q = 1 if L == s.n_layers - 1 else n
        total += ablated_block_flops(s, rows, n_q, stop, n_changed) if L == layer else rows * block_flops(s, n_q, n, stop)
    return total


def planned_flops(sweeper: Any, prompts: list) -> int:
    """What ``sweeper.sweep_many(prompts)`` will count in ``sweeper.flops``, from the clean pass alone.

    Uses the sweep's own batching (``Sweeper.suffix_plan``, ingest/grouping.py) without running an
    ablation, so the cost of a big model's prompt can be known before (or instead of) sweeping it.
    """
    if sweeper.general:  # its counts mirror the fast path's batching and reads only
        raise ValueError("planned_flops covers residual-only sweeps on the fast path")
    before = sweeper.flops
    clean = sweeper.clean_pass(prompts)
    total = sweeper.flops - before
    sweeper.flops = before
    s, n_sites = sweeper.shape, len(sweeper.sites)
    for k, site in enumerate(sweeper.sites):
        nxt = sweeper.sites[k + 1].d_sae if k + 1 < n_sites else None
        acts = site.sae.encode(clean.resid[site.layer])
        total += encode_flops(s, acts.shape[0] * acts.shape[1], site.d_sae)
        masked = sweeper.ablatable(clean, k, acts)
        pairs = (masked != 0).any(1).nonzero()
        if pairs.shape[0] == 0:
            continue
        removed = masked[pairs[:, 0], :, pairs[:, 1]] != 0
        if not sweeper.suffix_reuse:
            total += pairs.shape[0] * full_ablation_flops(s, site.layer, removed.shape[1], nxt)
            continue
        for batch in sweeper.suffix_plan(clean, pairs[:, 0], removed)[1]:
            rows = batch.hi - batch.lo
            total += _suffix_blocks(s, site.layer, rows, batch.start, batch.stop, batch.n_changed)
            total += rows * (unembed_flops(s, 1) + (encode_flops(s, 1, nxt) if nxt else 0))
    return total
