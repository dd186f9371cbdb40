"""One prompt: finding it, its tokens and clean top next tokens, the activations and logit
effects of a drawn graph's features, and its graph against noise.

Sign convention everywhere: ablated minus clean (a negative edge weight or dprob means that
ablating the feature suppresses the target).
"""

from __future__ import annotations

from typing import Sequence

import polars as pl

from featuregraph.query.api import fetch, parse_node, prompt_graph
from featuregraph.store.db import Database, QueryLimits
from featuregraph.store.models import Node

FIND_PROMPTS = """
SELECT run_id, prompt_id, tag, n_tokens, n_ablations, text
FROM prompts
WHERE run_id = $run AND ($tag IS NULL OR tag = $tag)
  AND ($search IS NULL OR contains(lower(text), lower($search)))
ORDER BY prompt_id
LIMIT $limit
"""
PROMPT = """
SELECT run_id, prompt_id, tag, tags, external_id, metadata::VARCHAR AS metadata, n_tokens, n_ablations,
       ingested_at, text
FROM prompts WHERE run_id = $run AND prompt_id = $prompt
"""
PROMPT_TOKENS = """
SELECT position, token_id, token FROM tokens WHERE run_id = $run AND prompt_id = $prompt ORDER BY position
"""
TOP_NEXT_TOKENS = """
SELECT t.rank, t.token_id, v.token, t.prob, t.logp
FROM top_next_tokens t
LEFT JOIN vocab v ON v.run_id = t.run_id AND v.token_id = t.token_id
WHERE t.run_id = $run AND t.prompt_id = $prompt
ORDER BY t.rank
"""
# The nodes of a drawn graph, as two parallel lists (layers, features).
NODE_ACTIVATIONS = """
SELECT a.layer, a.feature, a.position, a.activation
FROM activations a
JOIN (SELECT unnest($layers::SMALLINT[]) AS layer, unnest($features::INTEGER[]) AS feature) n
  ON n.layer = a.layer AND n.feature = a.feature
WHERE a.run_id = $run AND a.prompt_id = $prompt
ORDER BY a.layer, a.feature, a.position
"""
NODE_LOGITS = """
WITH le AS (
    SELECT l.layer, l.feature, l.token_id, l.dlogp, l.dprob,
           CASE WHEN l.dprob > 0 THEN 'promoted' ELSE 'suppressed' END AS direction
    FROM logit_effects l
    JOIN (SELECT unnest($layers::SMALLINT[]) AS layer, unnest($features::INTEGER[]) AS feature) n
      ON n.layer = l.layer AND n.feature = l.feature
    WHERE l.run_id = $run AND l.prompt_id = $prompt AND l.dprob <> 0
)
SELECT le.layer, le.feature, le.direction, le.token_id, v.token, le.dlogp, le.dprob,
       row_number() OVER (PARTITION BY le.layer, le.feature, le.direction
                          ORDER BY abs(le.dprob) DESC, le.token_id) AS token_rank
FROM le
LEFT JOIN vocab v ON v.run_id = $run AND v.token_id = le.token_id
QUALIFY token_rank <= $top
ORDER BY le.layer, le.feature, le.direction, token_rank
"""
PROMPT_EDGE_SNR = """
SELECT up_layer, up_feature, down_layer, down_feature, weight, noise_mean, noise_std, noise_abs_p95,
       z_score, noise_ratio, p_value
FROM edge_snr_at($experiment)
WHERE run_id = $run AND prompt_id = $prompt
"""


def find_prompts(
    db: Database,
    run: int,
    search: str | None = None,
    tag: str | None = None,
    limit: int = 200,
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """Prompts of a run whose text contains ``search`` (case-insensitive), by prompt id."""
    params = {"run": run, "tag": tag, "search": search or None, "limit": limit}
    return fetch(db, FIND_PROMPTS, params, limits)


def prompt(db: Database, run: int, prompt_id: int, limits: QueryLimits | None = None) -> pl.DataFrame:
    """One prompt's row (empty when there is none)."""
    return fetch(db, PROMPT, {"run": run, "prompt": prompt_id}, limits)


def prompt_tokens(db: Database, run: int, prompt_id: int, limits: QueryLimits | None = None) -> pl.DataFrame:
    """One prompt's tokens in order: position, token id and text."""
    return fetch(db, PROMPT_TOKENS, {"run": run, "prompt": prompt_id}, limits)


def top_next_tokens(
    db: Database, run: int, prompt_id: int, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """The clean pass's most likely next tokens at the read position."""
    return fetch(db, TOP_NEXT_TOKENS, {"run": run, "prompt": prompt_id}, limits)


def _node_lists(nodes: Sequence[str | Node]) -> dict:
    parsed = [parse_node(n) for n in nodes]
    return {"layers": [n.layer for n in parsed], "features": [n.feature for n in parsed]}


def node_activations(
    db: Database, run: int, prompt_id: int, nodes: Sequence[str | Node], limits: QueryLimits | None = None
) -> pl.DataFrame:
    """Clean activations of ``nodes`` at every position of one prompt where they are active."""
    return fetch(db, NODE_ACTIVATIONS, {"run": run, "prompt": prompt_id, **_node_lists(nodes)}, limits)


def node_logits(
    db: Database,
    run: int,
    prompt_id: int,
    nodes: Sequence[str | Node],
    top: int = 3,
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """Per node of one prompt: the ``top`` tokens whose probability ablating it raises most
    (``promoted``) and lowers most (``suppressed``)."""
    params = {"run": run, "prompt": prompt_id, "top": top, **_node_lists(nodes)}
    return fetch(db, NODE_LOGITS, params, limits)


def prompt_edge_snr(
    db: Database, run: int, prompt_id: int, experiment: int, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """Every stored edge of one prompt against one noise experiment (the edge_snr view)."""
    return fetch(db, PROMPT_EDGE_SNR, {"run": run, "prompt": prompt_id, "experiment": experiment}, limits)


# -- a prompt's graph against noise ------------------------------------------------------------

SNR_MEASURES = {
    "z": "|z| against the edge's noise (weight - noise mean) / noise std",
    "ratio": "|weight| / p95 of the feature's largest effect in noise",
    "p": "-log10 p-value against the feature's noise null (2 means p = 0.01)",
}


def longest_paths(edges: pl.DataFrame) -> pl.Series:
    """For each edge (up_layer, up_feature, down_layer, down_feature) of a graph whose edges go
    forward: the number of edges of the longest path through it. (Stored (layer, feature) keys
    sort in forward order: within a layer the site code orders res < att < mlp/tc.)"""
    ups = list(zip(edges["up_layer"].to_list(), edges["up_feature"].to_list(), strict=True))
    downs = list(zip(edges["down_layer"].to_list(), edges["down_feature"].to_list(), strict=True))
    into: dict[tuple[int, int], int] = {}
    for u, d in sorted(zip(ups, downs, strict=True)):  # by upstream layer: every edge into u is done
        into[d] = max(into.get(d, 0), into.get(u, 0) + 1)
    out_of: dict[tuple[int, int], int] = {}
    for u, d in sorted(zip(ups, downs, strict=True), key=lambda e: e[1], reverse=True):
        out_of[u] = max(out_of.get(u, 0), out_of.get(d, 0) + 1)
    return pl.Series(
        "path_len", [into.get(u, 0) + 1 + out_of.get(d, 0) for u, d in zip(ups, downs, strict=True)], pl.Int64
    )


def prompt_graph_snr(
    db: Database,
    prompt_id: int,
    run: int,
    k: int,
    min_path: int,
    min_weight: float,
    experiment: int | None,
    min_snr: float = 0.0,
    measure: str = "z",
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """One prompt's graph as :func:`featuregraph.query.api.prompt_graph` prunes it, with each edge's signal
    against noise (``z_score``, ``noise_ratio``) when ``experiment`` is given.

    With ``min_snr`` > 0, edges below it (or without a noise figure) are dropped after the
    top-``k`` cut and before the path-length cut, and ``path_len`` is recomputed.
    """
    if measure not in SNR_MEASURES:
        raise ValueError(f"unknown signal-to-noise measure {measure!r}")
    filtering = experiment is not None and min_snr > 0
    graph = prompt_graph(db, prompt_id, run, k, 1 if filtering else min_path, min_weight, limits)
    if experiment is None:
        return graph.with_columns(
            pl.lit(None, pl.Float64).alias("z_score"),
            pl.lit(None, pl.Float64).alias("noise_ratio"),
            pl.lit(None, pl.Float64).alias("p_value"),
        )
    keys = ["up_layer", "up_feature", "down_layer", "down_feature"]
    snr = prompt_edge_snr(db, run, prompt_id, experiment, limits).select(
        *keys,
        pl.col("z_score").cast(pl.Float64),
        pl.col("noise_ratio").cast(pl.Float64),
        pl.col("p_value").cast(pl.Float64),
    )
    graph = graph.join(snr, on=keys, how="left")
    if not filtering:
        return graph
    value = {
        "z": pl.col("z_score").abs(),
        "ratio": pl.col("noise_ratio"),
        "p": -pl.col("p_value").log10(),
    }[measure]
    graph = graph.filter(value.fill_null(0.0) >= min_snr)
    if graph.height == 0:
        return graph
    graph = graph.with_columns(longest_paths(graph))
    return graph.filter(pl.col("path_len") >= min_path)


__all__ = [
    "SNR_MEASURES",
    "find_prompts",
    "longest_paths",
    "node_activations",
    "node_logits",
    "prompt",
    "prompt_edge_snr",
    "prompt_graph_snr",
    "prompt_tokens",
    "top_next_tokens",
]
