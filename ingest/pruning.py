"""Ingest-time pruning of a prompt's edges: an option recorded in the run (``SweepConfig.prune``).

Applied to the sweep's output before it is written (never inside the sweep's kernel), so the
sweep stays the same computation whatever is kept. Modes:

- ``none``: keep every edge the sweep kept (lossless; the default).
- ``paths``: per ablation (prompt, upstream feature) the ``prune_top_k`` edges largest by
  |weight| (ties: the earlier edge in the sweep's order), then only the edges that lie on a chain of
  at least ``prune_min_path_edges`` edges within the prompt's remaining graph (a chain follows
  edges head to tail: u -> v -> w ...; its length counts edges).
- ``relative``: the edges with |weight| >= ``prune_rel_floor`` x the largest |weight| of their
  ablation.

Pruning drops edges only; the ablation's other results (logit effects, activations) stay. The
path macros' ``min_rel_weight`` compares with the largest stored |weight| of an ablation, which
``paths`` pruning may have dropped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Iterable

import numpy as np

from featuregraph.ingest.config import SweepConfig
from featuregraph.store.models import PromptResult


def _ablation_ids(edges: dict[str, np.ndarray]) -> np.ndarray:
    keys = np.stack([edges["up_layer"].astype(np.int64), edges["up_feature"].astype(np.int64)], axis=1)
    _, ids = np.unique(keys, axis=0, return_inverse=True)
    return ids.reshape(-1)


def top_k_per_ablation(edges: dict[str, np.ndarray], k: int) -> np.ndarray:
    """Mask of the ``k`` edges of largest |weight| in each ablation (ties: the earlier row)."""
    n = len(edges["weight"])
    if n == 0:
        return np.zeros(0, bool)
    ids = _ablation_ids(edges)
    # by ablation, then |weight| descending, then row: a stable lexsort
    order = np.lexsort((np.arange(n), -np.abs(edges["weight"].astype(np.float64)), ids))
    sorted_ids = ids[order]
    starts = np.searchsorted(sorted_ids, sorted_ids, side="left")
    rank = np.arange(n) - starts
    keep = np.zeros(n, bool)
    keep[order[rank < k]] = True
    return keep


def on_long_chains(edges: dict[str, np.ndarray], mask: np.ndarray, min_edges: int) -> np.ndarray:
    """Mask (within ``mask``) of the edges on a chain of at least ``min_edges`` masked edges."""
    rows = np.flatnonzero(mask)
    if min_edges <= 1 or len(rows) == 0:
        return mask.copy()
    up = list(zip(edges["up_layer"][rows].tolist(), edges["up_feature"][rows].tolist()))
    down = list(zip(edges["down_layer"][rows].tolist(), edges["down_feature"][rows].tolist()))
    # Edges go from a lower layer to a higher one, so processing by layer is a topological order.
    into: dict = defaultdict(int)  # longest chain (edges) ending at a node
    for i in sorted(range(len(rows)), key=lambda i: up[i][0]):
        into[down[i]] = max(into[down[i]], into[up[i]] + 1)
    out_of: dict = defaultdict(int)  # longest chain starting at a node
    for i in sorted(range(len(rows)), key=lambda i: -down[i][0]):
        out_of[up[i]] = max(out_of[up[i]], out_of[down[i]] + 1)
    keep = np.zeros(len(mask), bool)
    for i, row in enumerate(rows):
        keep[row] = into[up[i]] + 1 + out_of[down[i]] >= min_edges
    return keep


def relative_floor(edges: dict[str, np.ndarray], floor: float) -> np.ndarray:
    """Mask of the edges with |weight| >= ``floor`` x their ablation's largest |weight|."""
    if len(edges["weight"]) == 0:
        return np.zeros(0, bool)
    ids = _ablation_ids(edges)
    size = np.abs(edges["weight"].astype(np.float64))
    largest = np.zeros(ids.max() + 1)
    np.maximum.at(largest, ids, size)
    return size >= floor * largest[ids]


def prune_mask(edges: dict[str, np.ndarray], sweep: SweepConfig) -> np.ndarray:
    """The rows of one prompt's edge columns that ``sweep``'s pruning keeps."""
    n = len(edges["weight"])
    if sweep.prune == "none":
        return np.ones(n, bool)
    if sweep.prune == "relative":
        return relative_floor(edges, sweep.prune_rel_floor)
    return on_long_chains(edges, top_k_per_ablation(edges, sweep.prune_top_k), sweep.prune_min_path_edges)


def prune_results(results: Iterable[PromptResult], sweep: SweepConfig) -> list[PromptResult]:
    """``results`` with their edges pruned as ``sweep`` says (the same objects when ``none``)."""
    results = list(results)
    if sweep.prune == "none":
        return results
    out = []
    for r in results:
        edges = r.tables["edges"]
        keep = prune_mask(edges, sweep)
        out.append(replace(r, tables={**r.tables, "edges": {c: v[keep] for c, v in edges.items()}}))
    return out


__all__ = ["on_long_chains", "prune_mask", "prune_results", "relative_floor", "top_k_per_ablation"]
