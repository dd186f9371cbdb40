"""Recurring paths by brute force: every chain of every prompt, enumerated in plain Python.

A graph is {prompt_id: (tag, [(up_layer, up_feature, down_layer, down_feature, weight), ...])}
(one run). A chain is a sequence of stored edges, each starting where the previous one ends
(same layer and feature; a step may skip layers), keyed by (layers, features, signs).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

Edge = tuple[int, int, int, int, float]
Chain = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # layers, features, signs


def sign(weight: float) -> int:
    return -1 if weight < 0 else 1


def chain_weights(
    graph: dict, n_edges: int, tag: str | None = None, min_layer: int | None = None, max_layer: int | None = None,
    signs: list[int] | None = None,
) -> dict[Chain, dict[int, list[tuple[int, Edge]]]]:
    """Chain -> {prompt: [(prompt, edge) for each step]} for every chain in every prompt."""
    found: dict[Chain, dict] = defaultdict(dict)
    for prompt, (ptag, edges) in graph.items():
        if tag is not None and ptag != tag:
            continue
        outs = defaultdict(list)
        for e in edges:
            if (min_layer is None or e[0] >= min_layer) and (max_layer is None or e[2] <= max_layer):
                outs[(e[0], e[1])].append(e)

        for e in edges:
            if (min_layer is None or e[0] >= min_layer) and (max_layer is None or e[2] <= max_layer):
                if signs is None or signs[0] in (0, sign(e[4])):
                    _walk([e], n_edges, outs, signs, prompt, found)
    return found


def _walk(path: list[Edge], n_edges: int, outs: dict, signs, prompt: int, found: dict) -> None:
    """Extend ``path`` by every stored edge out of its last node, recording full chains."""
    if len(path) == n_edges:
        layers = tuple([path[0][0]] + [e[2] for e in path])
        feats = tuple([path[0][1]] + [e[3] for e in path])
        found[(layers, feats, tuple(sign(e[4]) for e in path))][prompt] = [(prompt, e) for e in path]
        return
    for e in outs[(path[-1][2], path[-1][3])]:
        if signs is None or signs[len(path)] in (0, sign(e[4])):
            _walk(path + [e], n_edges, outs, signs, prompt, found)


def expected_chains(
    graph: dict, n_edges: int, min_support: int, strong: Callable[[int, Edge], bool] = lambda p, e: True, **where
) -> dict[Chain, dict]:
    """Chain -> support, support_any, mean_weights, strength, for chains with support >= min_support."""
    out = {}
    for chain, prompts in chain_weights(graph, n_edges, **where).items():
        kept = [steps for steps in prompts.values() if all(strong(p, e) for p, e in steps)]
        if not kept or len(kept) < min_support:
            continue
        means = [sum(steps[i][1][4] for steps in kept) / len(kept) for i in range(n_edges)]
        out[chain] = {"support": len(kept), "support_any": len(prompts), "mean_weights": means,
                      "strength": min(abs(m) for m in means)}  # fmt: skip
    return out


def rank_key(chain: Chain, row: dict, rank_by: str = "support", run: int = 1) -> tuple:
    """The documented order: (strength,) support, most first; then run, the nodes as (layer,
    feature) pairs in order, the signs."""
    layers, feats, signs = chain
    first = (-row["strength"],) if rank_by == "strength" else ()
    return (*first, -row["support"], run, list(zip(layers, feats, strict=True)), list(signs))


def top_chains(found: dict[Chain, dict], top: int | None, rank_by: str = "support") -> list[Chain]:
    ordered = sorted(found, key=lambda c: rank_key(c, found[c], rank_by))
    return ordered if top is None else ordered[:top]


def got_chains(frame) -> list[Chain]:
    """The chains of a recurring_paths frame, in its order."""
    return [(tuple(r["layers"]), tuple(r["features"]), tuple(r["signs"])) for r in frame.iter_rows(named=True)]
