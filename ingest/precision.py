"""Low-precision sweeps against float32: the error measures behind the documented tolerance.

``--dtype bfloat16|float16`` runs in delta mode where supported (ingest/delta.py: float32 clean pass,
the linear maps of the ablation's difference in the low dtype); other runs are cast to the dtype
(:func:`cast`) and every forward pass computes in it ("full" low precision), with logits,
log-softmax, probabilities and edge differences taken in float32. :func:`compare` measures how far
the stored numbers move (docs/sweep.md#precision, BENCHMARKS.md).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from featuregraph.ingest.loading import SaeSite

#: Documented tolerance of a delta-mode bfloat16 / float16 sweep against float32
#: (docs/sweep.md#precision), from the demo and GPT-2-shaped measurements with a margin: upper bounds
#: on the median relative errors of kept edges and logit effects, lower bound on the mean top-32 edge
#: overlap per ablation. The maxima are reported, not bounded: a downstream feature at its JumpReLU
#: threshold or top-k boundary can flip under any rounding, so single edges can be far off.
TOLERANCE = {
    "bfloat16": {"edge_rel_median": 0.02, "logit_rel_median": 0.02, "top32_overlap_mean": 0.97},
    "float16": {"edge_rel_median": 0.003, "logit_rel_median": 0.003, "top32_overlap_mean": 0.98},
}
#: The same for "full" low precision (every forward pass in the dtype: runs delta mode cannot serve),
#: from the demo model's measurement with a margin. Far looser: rounding of an activation swamps effects.
FULL_TOLERANCE = {
    "bfloat16": {"edge_rel_median": 0.3, "logit_rel_median": 1.5, "top32_overlap_mean": 0.25},
    "float16": {"edge_rel_median": 0.15, "logit_rel_median": 0.25, "top32_overlap_mean": 0.6},
}
#: "Large": at least this fraction of the largest |value| of its ablation (smaller ones are
#: dominated by rounding of the clean activation and are what the median describes).
LARGE = 0.1


def cast(model: Any, sites: list[SaeSite], dtype: str) -> tuple[Any, list[SaeSite]]:
    """Copies of ``model`` and ``sites`` in ``dtype`` (the originals are left as they are)."""
    td = getattr(torch, dtype)
    cfg = copy.deepcopy(model.cfg)
    cfg.dtype = td
    # A fresh model from the config, not a deepcopy: sae_lens' HookedSAETransformer wraps module
    # forwards in closures that a deepcopy would leave pointing at the original's modules.
    low = type(model)(cfg, move_to_device=False)
    low.load_state_dict(model.state_dict())
    low = low.to(next(model.parameters()).device).to(td).eval()
    return low, [replace(s, sae=copy.deepcopy(s.sae).to(dtype=td)) for s in sites]


def _by_ablation(results, table: str, key_cols: tuple[str, ...], id_cols: tuple[str, ...], value: str):
    """``{(prompt, *ablation ids): {key: value}}`` from a list of PromptResults."""
    out: dict[tuple, dict[tuple, float]] = {}
    for r in results:
        t = r.tables[table]
        for i in range(len(t[value])):
            abl = (r.prompt_id, *(int(t[c][i]) for c in id_cols))
            out.setdefault(abl, {})[tuple(int(t[c][i]) for c in key_cols)] = float(t[value][i])
    return out


def _rel_errors(ref: dict, low: dict) -> tuple[list[float], list[float], list[float]]:
    """Errors of entries kept in both: relative to the value (all of them; large values only) and
    relative to the largest |value| of the ablation (all)."""
    every, large, scaled = [], [], []
    for abl, ref_row in ref.items():
        low_row = low.get(abl, {})
        top = max((abs(v) for v in ref_row.values()), default=0.0)
        for key, v in ref_row.items():
            if key in low_row and v != 0:
                e = abs(low_row[key] - v) / abs(v)
                every.append(e)
                scaled.append(abs(low_row[key] - v) / top)
                if abs(v) >= LARGE * top:
                    large.append(e)
    return every, large, scaled


def compare(ref_results, low_results, top: int = 32) -> dict[str, float]:
    """Error of a low-precision sweep's stored numbers against float32 on the same prompts.

    ``edge_rel_*`` / ``logit_rel_*``: ``|low - ref| / |ref|`` over edges (weight) and logit effects
    (dlogp) kept by both runs, median over all and max over large ones (see ``LARGE``);
    ``*_scaled_*``: ``|low - ref|`` over the ablation's largest ``|ref|`` (error on the scale of
    the ablation's own effect);
    ``top32_overlap_*``: per ablation, the share of the reference's ``top`` largest-|weight| edges
    that the low-precision run also has in its ``top``.
    """
    e_ref = _by_ablation(ref_results, "edges", ("down_layer", "down_feature"), ("up_layer", "up_feature"), "weight")
    e_low = _by_ablation(low_results, "edges", ("down_layer", "down_feature"), ("up_layer", "up_feature"), "weight")
    l_ref = _by_ablation(ref_results, "logit_effects", ("token_id",), ("layer", "feature"), "dlogp")
    l_low = _by_ablation(low_results, "logit_effects", ("token_id",), ("layer", "feature"), "dlogp")
    e_all, e_large, e_scaled = _rel_errors(e_ref, e_low)
    l_all, l_large, l_scaled = _rel_errors(l_ref, l_low)
    overlaps = []
    for abl, row in e_ref.items():
        best = {k for k, _ in sorted(row.items(), key=lambda kv: -abs(kv[1]))[:top]}
        got = {k for k, _ in sorted(e_low.get(abl, {}).items(), key=lambda kv: -abs(kv[1]))[:top]}
        overlaps.append(len(best & got) / len(best))

    def stat(xs, f):
        return float(f(xs)) if xs else float("nan")

    return {
        "edges_compared": len(e_all),
        "edge_rel_median": stat(e_all, np.median),
        "edge_rel_max_large": stat(e_large, np.max),
        "edge_rel_max": stat(e_all, np.max),
        "edge_scaled_median": stat(e_scaled, np.median),
        "edge_scaled_max": stat(e_scaled, np.max),
        "logits_compared": len(l_all),
        "logit_rel_median": stat(l_all, np.median),
        "logit_rel_max_large": stat(l_large, np.max),
        "logit_rel_max": stat(l_all, np.max),
        "logit_scaled_median": stat(l_scaled, np.median),
        "logit_scaled_max": stat(l_scaled, np.max),
        "top32_overlap_mean": stat(overlaps, np.mean),
        "top32_overlap_min": stat(overlaps, np.min),
    }


def within_tolerance(measured: dict[str, float], dtype: str, mode: str = "delta") -> list[str]:
    """The measures of ``measured`` outside :data:`TOLERANCE` (``mode="delta"``) or
    :data:`FULL_TOLERANCE` (``"full"``) for ``dtype`` (empty: within)."""
    bad = []
    for name, bound in (TOLERANCE if mode == "delta" else FULL_TOLERANCE)[dtype].items():
        ok = measured[name] >= bound if name.startswith("top32") else measured[name] <= bound
        if not ok:
            bad.append(f"{name} = {measured[name]:.4g} (bound {bound})")
    return bad
