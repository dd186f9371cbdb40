"""Imported graphs for the dashboard: a stored graph's nodes laid out by layer and position, and
its strongest links with both ends' coordinates (docs/graphs.md#storage)."""

from __future__ import annotations

import polars as pl

from featuregraph.query.api import fetch
from featuregraph.store.db import Database, QueryLimits

GRAPH_INFO = """
SELECT method, scan, slug, source_file, schema_version, node_threshold, edge_threshold, prompt_tokens
FROM graphs WHERE run_id = $run AND prompt_id = $prompt
"""
# x: the position, nodes sharing a (layer, position) spread across it; y: the layer, embeddings
# one below the lowest layer (their layer is "E", NULL here).
_PLACED = """
WITH placed AS (
    SELECT node_index, node_id, kind, feature_type, coalesce(layer, -1) AS y_layer, layer_label, position, feature,
           token_id, activation, influence, token_prob, clerp,
           CASE WHEN kind = 'feature' THEN fg_node(layer, feature) END AS name,
           row_number() OVER (PARTITION BY coalesce(layer, -1), position ORDER BY node_index) - 1 AS slot,
           count(*) OVER (PARTITION BY coalesce(layer, -1), position) AS n_slots
    FROM graph_nodes WHERE run_id = $run AND prompt_id = $prompt
)
SELECT *, position + (slot + 0.5) / n_slots * 0.8 - 0.4 AS x, y_layer AS y FROM placed
"""
GRAPH_NODES = _PLACED + " ORDER BY node_index"
# The strongest links (by |weight|), ends placed as above; weight in featuregraph's sign.
GRAPH_LINKS = f"""
WITH nodes AS ({_PLACED})
SELECT s.node_id AS source, t.node_id AS target, l.weight, s.x AS x, s.y AS y, t.x AS x2, t.y AS y2
FROM graph_links l
JOIN nodes s ON s.node_index = l.source_index
JOIN nodes t ON t.node_index = l.target_index
WHERE l.run_id = $run AND l.prompt_id = $prompt
ORDER BY abs(l.weight) DESC, s.node_index, t.node_index
LIMIT $top
"""


def graph_info(db: Database, run: int, prompt_id: int, limits: QueryLimits | None = None) -> pl.DataFrame:
    """The ``graphs`` row of (run, prompt): empty unless the prompt is a stored (imported) graph."""
    return fetch(db, GRAPH_INFO, {"run": run, "prompt": prompt_id}, limits)


def graph_layout(db: Database, run: int, prompt_id: int, limits: QueryLimits | None = None) -> pl.DataFrame:
    """A stored graph's nodes with drawing coordinates: ``x`` around the position, ``y`` the layer
    (-1 for embeddings)."""
    return fetch(db, GRAPH_NODES, {"run": run, "prompt": prompt_id}, limits)


def graph_layout_links(
    db: Database, run: int, prompt_id: int, top: int = 200, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """A stored graph's ``top`` strongest links, each end's (x, y) as :func:`graph_layout` places it."""
    return fetch(db, GRAPH_LINKS, {"run": run, "prompt": prompt_id, "top": top}, limits)


__all__ = ["graph_info", "graph_layout", "graph_layout_links"]
