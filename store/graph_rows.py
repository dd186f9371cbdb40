"""A graph file as featuregraph's rows: the general tables, and the projection onto ``edges``.

:func:`graph_rows` turns a validated :class:`GraphFile` into the rows of ``graphs``,
``graph_nodes`` and ``graph_links`` (everything the file says, positions and every node kind
kept) plus a :class:`PromptResult` holding its feature -> feature projection, which the
ingest's own write path (:func:`store.runs.insert_prompt_tables`) stores in ``edges`` so that
``prompt_graph``, ``recurring_paths`` and the feature helpers read imported graphs too.

Projection (docs/graphs.md#projection): a link between two feature nodes becomes an edge
between their (layer, feature); links of the same feature pair at different positions are
summed, as the exact sweep's edge sums an ablation's effect over positions. Weights are
negated into featuregraph's "ablated minus clean" convention. Self-pairs (a feature to itself
at another position) and sums of exactly 0 are dropped; links touching embedding, error or
logit nodes stay in the general tables only.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from featuregraph.store.graph_model import (
    GraphFile,
    feature_index,
    feature_site,
    layer_number,
    logit_probability,
    node_kind,
    token_id_of,
)  # fmt: skip
from featuregraph.store.models import PromptResult, encode_feature
from featuregraph.store.tables import value_columns

# The written columns of graph_nodes after run_id and prompt_id, in order: a node's row.
NODE_COLUMNS = value_columns("graph_nodes")
# Kept in `extra` so that a node whose layer was a JSON number is written back as one.
LAYER_INT_KEY = "_layer_is_int"


@dataclass
class GraphRows:
    """One graph file's rows, before it has a run and prompt id."""

    graph: dict[str, Any]
    nodes: dict[str, list]
    links: dict[str, list]
    projection: PromptResult
    generator: str


# The columns' integer ranges (SMALLINT layer and position, INTEGER feature and token, BIGINT raw id).
_RANGES = {"layer": 2**15, "ctx_idx": 2**15, "feature": 2**31, "raw feature id": 2**63, "token id": 2**31}


def _check_ranges(node_id: str, *values: int | None) -> None:
    for (name, bound), value in zip(_RANGES.items(), values, strict=True):
        if value is not None and not -bound <= value < bound:
            raise ValueError(f"node {node_id!r}: {name} {value} is out of range")


def generator_name(graph: GraphFile) -> str:
    """The generator a file names (metadata.info.generator.name), as a run method suffix:
    lower case, [a-z0-9._-] only; ``circuit-tracer`` for an unnamed file with a transcoder_list
    (circuit-tracer's marker), else ``unknown``."""
    info = graph.metadata.info
    name = info.generator.name if info and info.generator and info.generator.name else None
    if not name:
        return "circuit-tracer" if graph.metadata.transcoder_list is not None else "unknown"
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.strip().lower())
    return cleaned.strip("-") or "unknown"


def graph_rows(graph: GraphFile, content_sha256: str, source_file: str | None, imported_at: Any) -> GraphRows:
    """The rows of one validated graph file. Raises ValueError (one line) for what the model
    cannot check alone: a feature node without a numeric layer, feature ids that contradict
    their node ids."""
    meta = graph.metadata
    cantor_ids = graph.uses_cantor
    ours = generator_name(graph) == "featuregraph"
    table: list[tuple] = []  # one row of NODE_COLUMNS per node
    keys: list[tuple[str, int | None, int | None]] = []  # (kind, layer, feature) per node
    for i, node in enumerate(graph.nodes):
        kind = node_kind(node.feature_type)
        layer = layer_number(node.layer)
        feature = None
        if kind == "feature":
            if layer is None:
                raise ValueError(f"feature node {node.node_id!r} has layer {node.layer!r}, not a number")
            index = feature_index(node, layer, cantor_ids)
            try:  # stored encoded with its site, as the sweep stores it (docs/graphs.md#feature-sites)
                feature = encode_feature(feature_site(node, layer, ours), index)
            except ValueError as exc:
                raise ValueError(f"node {node.node_id!r}: {exc}") from None
        keys.append((kind, layer, feature))
        token_id = token_id_of(node, kind)
        _check_ranges(node.node_id, layer, node.ctx_idx, feature, node.feature, token_id)
        # model_extra: the fields the model does not name (dumping every node would cost more than the rest)
        extra = dict(node.model_extra or {})
        if "qk_tracing_results" in node.model_fields_set:
            extra["qk_tracing_results"] = node.qk_tracing_results
        if isinstance(node.layer, int):
            extra[LAYER_INT_KEY] = True
        table.append((
            i, node.node_id, kind, node.feature_type, layer, str(node.layer), node.ctx_idx, feature, node.feature,
            token_id, node.activation, node.influence, node.token_prob, node.is_target_logit,
            node.clerp, node.jsNodeId, json.dumps(extra) if extra else None,
        ))  # fmt: skip
    nodes = {
        name: list(column) for name, column in zip(NODE_COLUMNS, zip(*table, strict=True), strict=True)
    } or {c: [] for c in NODE_COLUMNS}
    index = {node.node_id: i for i, node in enumerate(graph.nodes)}
    links = {
        "source_index": [index[link.source] for link in graph.links],
        "target_index": [index[link.target] for link in graph.links],
        "weight": [-link.weight for link in graph.links],  # featuregraph's sign convention
    }
    document = graph.dump(without={"nodes", "links"})
    pruning = meta.pruning_settings
    row = {
        "method": f"imported:{generator_name(graph)}", "scan": meta.scan, "slug": meta.slug, "prompt": meta.prompt,
        "prompt_tokens": list(meta.prompt_tokens), "schema_version": meta.schema_version,
        "node_threshold": pruning.node_threshold if pruning and pruning.node_threshold is not None else meta.node_threshold,
        "edge_threshold": pruning.edge_threshold if pruning else None, "source_file": source_file,
        "content_sha256": content_sha256, "document": json.dumps(document), "imported_at": imported_at,
    }  # fmt: skip
    probs = [
        logit_probability(n) if k[0] == "logit" else None for n, k in zip(graph.nodes, keys, strict=True)
    ]
    projection = _projection(graph, nodes, keys, links, probs)
    return GraphRows(row, nodes, links, projection, generator_name(graph))


def _projection(
    graph: GraphFile, nodes: dict[str, list], keys: list, links: dict[str, list], probs: list[float | None]
) -> PromptResult:
    meta = graph.metadata
    n_tokens = len(meta.prompt_tokens)
    token_ids = np.full(n_tokens, -1, np.int64)
    for kind, pos, tok in zip(nodes["kind"], nodes["position"], nodes["token_id"], strict=True):
        if kind == "embedding" and tok is not None:
            token_ids[pos] = tok
    tokens = {"position": np.arange(n_tokens), "token_id": token_ids, "token": list(meta.prompt_tokens)}

    logits = sorted(
        ((p, tok) for kind, tok, p in zip(nodes["kind"], nodes["token_id"], probs, strict=True)
         if kind == "logit" and tok is not None and p is not None),
        key=lambda x: -x[0],
    )  # fmt: skip
    top_next = {
        "rank": np.arange(1, len(logits) + 1),
        "token_id": np.array([t for _, t in logits], np.int64),
        "prob": np.array([p for p, _ in logits], np.float64),
        "logp": np.array([math.log(p) if p > 0 else -math.inf for p, _ in logits], np.float64),
    }

    act_rows = defaultdict(float)
    per_feature: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
    for (kind, layer, feature), pos, act in zip(keys, nodes["position"], nodes["activation"], strict=True):
        if kind != "feature":
            continue
        per_feature[(layer, feature)][pos] = act or 0.0
        if act is not None:
            act_rows[(layer, pos, feature)] = act
    activations = _columns(
        ("layer", "position", "feature", "activation"), [(*k, v) for k, v in act_rows.items()]
    )
    read_pos = n_tokens - 1
    ablations = _columns(
        ("layer", "feature", "n_positions", "max_activation", "read_activation"),
        [
            (layer, f, len(ps), max(ps.values()), ps.get(read_pos, 0.0))
            for (layer, f), ps in per_feature.items()
        ],
    )

    sums: dict[tuple[int, int, int, int], float] = defaultdict(float)
    for s, t, w in zip(links["source_index"], links["target_index"], links["weight"], strict=True):
        (ks, ls, fs), (kt, lt, ft) = keys[s], keys[t]
        if ks == kt == "feature" and (ls, fs) != (lt, ft):
            sums[(ls, fs, lt, ft)] += w
    edges = _columns(
        ("up_layer", "up_feature", "down_layer", "down_feature", "weight"),
        [(*k, w) for k, w in sorted(sums.items()) if w != 0.0],
    )
    logit_effects = _columns(("layer", "feature", "token_id", "dlogp", "dprob"), [])
    return PromptResult(
        prompt_id=-1,
        text=meta.prompt,
        tag=None,
        metadata={"graph_slug": meta.slug},
        tables={
            "tokens": tokens,
            "top_next_tokens": top_next,
            "activations": activations,
            "ablations": ablations,
            "edges": edges,
            "logit_effects": logit_effects,
        },  # fmt: skip
    )


def _columns(names: tuple[str, ...], rows: list[tuple]) -> dict[str, np.ndarray]:
    cols = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return {n: np.array(c) if rows else np.empty(0) for n, c in zip(names, cols, strict=True)}


__all__ = ["GraphRows", "graph_rows", "generator_name", "LAYER_INT_KEY"]
