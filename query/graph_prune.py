"""Pruning a graph file: by |weight|, top-k per source, cumulative influence; and a size cap.

Influence (docs/graphs.md#pruning), circuit-tracer's notion written from its description:
A[t, s] = |weight of s -> t|, each row (target) normalised to sum 1; the logit nodes weigh
their probability (others 0); a node's influence is w·(A + A² + A³ + ...)[node], the
probability-weighted share of every path from it into the logits. The graph must be acyclic,
so the series ends. Node pruning keeps every logit node and the fewest other nodes, by
influence, whose influence adds up to at least ``node_threshold`` of the total; edge pruning
then keeps the fewest links between kept nodes, by A[t, s]·(influence[t] + w[t]), that add
up to ``edge_threshold`` of theirs. After any pruning a non-logit node left with no link is
dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from featuregraph.errors import InputError
from featuregraph.store.graph_model import GraphFile, PruningSettings, logit_probability, node_kind


@dataclass(frozen=True)
class Pruning:
    """What to keep. None: no pruning of that kind."""

    top_k: int | None = None  # per source node, the links of largest |weight|
    min_weight: float | None = None  # links with |weight| >= this
    node_threshold: float | None = None  # cumulative influence, 0 < t <= 1
    edge_threshold: float | None = None

    def check(self) -> "Pruning":
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"--top-k must be at least 1, got {self.top_k}")
        if self.min_weight is not None and self.min_weight < 0:
            raise InputError(f"--min-weight must be >= 0, got {self.min_weight}")
        for name, t in (("--node-threshold", self.node_threshold), ("--edge-threshold", self.edge_threshold)):
            if t is not None and not 0 < t <= 1:
                raise InputError(f"{name} is a cumulative fraction: 0 < t <= 1, got {t}")
        return self


def _arrays(graph: GraphFile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = {n.node_id: i for i, n in enumerate(graph.nodes)}
    src = np.array([order[link.source] for link in graph.links], np.int64)
    dst = np.array([order[link.target] for link in graph.links], np.int64)
    w = np.array([link.weight for link in graph.links], np.float64)
    return src, dst, w


def logit_weights(graph: GraphFile) -> np.ndarray:
    """Each node's logit weight: its clean probability for a logit node, else 0."""
    return np.array(
        [(logit_probability(n) or 0.0) if node_kind(n.feature_type) == "logit" else 0.0 for n in graph.nodes]
    )


def normalised_weights(graph: GraphFile) -> np.ndarray:
    """A[t, s] of every link: |weight| over the sum of |weight| into its target."""
    src, dst, w = _arrays(graph)
    into = np.zeros(len(graph.nodes))
    np.add.at(into, dst, np.abs(w))
    return np.divide(np.abs(w), into[dst], out=np.zeros_like(w), where=into[dst] > 0)


def node_influence(graph: GraphFile) -> np.ndarray:
    """Every node's influence on the logits (see the module doc); InputError on a cycle."""
    src, dst, _ = _arrays(graph)
    a = normalised_weights(graph)
    x = logit_weights(graph)
    total = np.zeros_like(x)
    for _ in range(len(graph.nodes) + 1):
        step = np.zeros_like(x)
        np.add.at(step, src, a * x[dst])  # (x @ A)[s] = sum over links s -> t of x[t] A[t, s]
        if not step.any():
            return total
        total += step
        x = step
    raise InputError("the graph has a cycle: influence is only defined on an acyclic graph")


def _cut(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of the fewest entries, largest score first, whose scores reach ``threshold`` of their sum."""
    keep = np.zeros(len(scores), bool)
    order = np.argsort(-scores, kind="stable")
    running = np.cumsum(scores[order])
    if not len(running) or running[-1] <= 0:
        return keep
    before = np.concatenate([[0.0], running[:-1]])
    keep[order[(before < threshold * running[-1]) & (scores[order] > 0)]] = True
    return keep


def _subgraph(graph: GraphFile, link_mask: np.ndarray, node_mask: np.ndarray | None = None) -> GraphFile:
    nodes = (
        graph.nodes if node_mask is None else [n for n, k in zip(graph.nodes, node_mask, strict=True) if k]
    )
    links = [link for link, k in zip(graph.links, link_mask, strict=True) if k]
    linked = {x for link in links for x in (link.source, link.target)}
    nodes = [n for n in nodes if n.node_id in linked or node_kind(n.feature_type) == "logit"]
    return graph.model_copy(update={"nodes": nodes, "links": links})


def prune(graph: GraphFile, pruning: Pruning) -> GraphFile:
    """``graph`` pruned as ``pruning`` asks: min weight, then top-k, then influence (each on
    what the previous left). Influence pruning records its thresholds in
    ``metadata.pruning_settings`` and writes each kept node's ``influence``."""
    pruning.check()
    if pruning.min_weight is not None:
        graph = _subgraph(graph, np.abs(_arrays(graph)[2]) >= pruning.min_weight)
    if pruning.top_k is not None:
        src, dst, w = _arrays(graph)
        order = np.lexsort((dst, -np.abs(w), src))  # by source, then |weight| descending
        rank = np.empty(len(w), np.int64)
        starts = np.searchsorted(src[order], src[order])
        rank[order] = np.arange(len(w)) - starts
        graph = _subgraph(graph, rank < pruning.top_k)
    if pruning.node_threshold is None and pruning.edge_threshold is None:
        return graph
    influence = node_influence(graph)
    is_logit = logit_weights(graph) > 0
    is_logit |= np.array([node_kind(n.feature_type) == "logit" for n in graph.nodes], bool)
    node_mask = is_logit.copy()
    scores = np.where(is_logit, 0.0, influence)
    node_mask |= _cut(scores, pruning.node_threshold) if pruning.node_threshold is not None else ~is_logit
    src, dst, _ = _arrays(graph)
    between = node_mask[src] & node_mask[dst]
    link_mask = between
    if pruning.edge_threshold is not None:
        edge_scores = normalised_weights(graph) * (influence[dst] + logit_weights(graph)[dst])
        link_mask = between & _cut(np.where(between, edge_scores, 0.0), pruning.edge_threshold)
    nodes = [
        n.model_copy(update={"influence": float(v)}) for n, v in zip(graph.nodes, influence, strict=True)
    ]
    settings = {"node_threshold": pruning.node_threshold, "edge_threshold": pruning.edge_threshold}
    meta = graph.metadata.model_copy(update={"pruning_settings": PruningSettings(**settings)})
    return _subgraph(graph.model_copy(update={"nodes": nodes, "metadata": meta}), link_mask, node_mask)


def to_bytes(graph: GraphFile) -> bytes:
    """The file's bytes: compact JSON of :meth:`GraphFile.dump`."""
    return json.dumps(graph.dump(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def fit_size(graph: GraphFile, max_bytes: int) -> tuple[GraphFile, bytes, int]:
    """``graph`` with its weakest links (smallest |weight|) dropped until the file is at most
    ``max_bytes``: ``(graph, its bytes, links dropped)``. InputError if no link count fits."""
    data = to_bytes(graph)
    if len(data) <= max_bytes:
        return graph, data, 0
    w = np.abs(_arrays(graph)[2])
    order = np.argsort(-w, kind="stable")

    def keep_top(m: int) -> tuple[GraphFile, bytes]:
        mask = np.zeros(len(w), bool)
        mask[order[:m]] = True
        g = _subgraph(graph, mask)
        return g, to_bytes(g)

    lo, hi = 0, len(w)  # the largest m that fits lies in [lo, hi); keep_top(hi) is too big
    best = keep_top(0)
    if len(best[1]) > max_bytes:
        raise InputError(f"the graph does not fit in {max_bytes} bytes even without links")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        candidate = keep_top(mid)
        if len(candidate[1]) <= max_bytes:
            lo, best = mid, candidate
        else:
            hi = mid
    return best[0], best[1], len(w) - lo


__all__ = [
    "Pruning",
    "prune",
    "node_influence",
    "normalised_weights",
    "logit_weights",
    "fit_size",
    "to_bytes",
]
