"""The query layer from Python: one small function per SQL helper, returning polars frames.

Each function checks its inputs (feature names ``L.F``, ``L.att.F``, ...; that the run and
prompt exist), then calls the macro of the same name (migrations/0003_query_macros.sql, documented in
docs/sql.md) with every value bound as a parameter. Pass ``limits`` (a time limit and a row
cap; :data:`DASHBOARD_LIMITS` for interactive use) to run it through
:meth:`store.db.Database.query`'s guard rails; a result cut by the row cap says so
(query/rows.py: "first N rows of M").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import polars as pl

from featuregraph.errors import InputError, NotFoundError
from featuregraph.query.rows import fetch_rows
from featuregraph.store.db import Database, QueryLimits
from featuregraph.store.models import SITE_RANK, SITE_SHORT, Node

DASHBOARD_LIMITS = QueryLimits(time_limit_s=10.0, max_rows=10_000)
MAX_PATH_EDGES = 6
#: The relative-weight filter the CLI, the dashboard and the demo start from (the SQL macros and
#: these functions default to 0, lossless): an edge under a tenth of its ablation's largest
#: effect is a side effect of that ablation, not a step of a path (docs/sql.md).
RECOMMENDED_MIN_REL_WEIGHT = 0.1
#: How recurring_paths can rank chains (docs/sql.md): by support, or by strength (the smallest
#: |mean weight| along the chain).
RANKINGS = ("support", "strength")

PROMPT_GRAPH = """
SELECT * FROM prompt_graph($prompt, run := $run, k := $k, min_path := $min_path, min_weight := $min_weight)
"""
RECURRING_PATHS = """
SELECT * FROM recurring_paths(n_edges := $n_edges, min_support := $min_support, run := $run,
    min_layer := $min_layer, max_layer := $max_layer, sign_pattern := $sign_pattern,
    min_weight := $min_weight, prompt_tag := $prompt_tag, min_rel_weight := $min_rel_weight,
    max_p := $max_p, experiment := $experiment, top := $top, rank_by := $rank_by)
"""
RECURRING_PATHS_LIMITED = RECURRING_PATHS + " LIMIT $limit"
PATH_PROMPTS = """
SELECT * FROM path_prompts($path_nodes, run := $run, sign_pattern := $sign_pattern,
    min_weight := $min_weight, prompt_tag := $prompt_tag)
"""
TAG_SPECIFIC_PATHS = """
SELECT * FROM tag_specific_paths($tag, n_edges := $n_edges, min_support := $min_support, run := $run,
    min_weight := $min_weight, min_rel_weight := $min_rel_weight, max_p := $max_p,
    experiment := $experiment, top := $top)
"""
# The node as its layer and stored feature: the name is parsed here already, and planning its
# parse in SQL cost more than the query (migration 0018).
FEATURE_EDGES = (
    "SELECT * FROM feature_edges_at($layer, $feature, run := $run, top := $top, min_count := $min_count)"
)
FEATURE_LOGITS = "SELECT * FROM feature_logits_at($layer, $feature, run := $run, top := $top)"
TOP_CONTEXTS = "SELECT * FROM top_contexts($node, run := $run, top := $top)"
COMPARE_PROMPTS = """
SELECT * FROM compare_prompts($prompt_a, $prompt_b, run := $run, min_weight := $min_weight)
"""

RUN_IDS = "SELECT run_id FROM runs ORDER BY run_id"
PROMPT_RUNS = "SELECT run_id FROM prompts WHERE prompt_id = $prompt AND ($run IS NULL OR run_id = $run)"
NOISE_EXPERIMENT = """
SELECT count(*) FROM experiments
WHERE experiment_id = $experiment AND kind = 'noise' AND status = 'complete' AND ($run IS NULL OR run_id = $run)
"""
TAG_RUNS = "SELECT count(*) FROM prompts WHERE tag = $tag AND ($run IS NULL OR run_id = $run)"
SAE_LAYERS = """
SELECT layer, site_kind, max(d_sae) FROM run_saes WHERE $run IS NULL OR run_id = $run GROUP BY ALL ORDER BY ALL
"""


@dataclass(frozen=True)
class Neighbourhood:
    """A feature across prompts: its in- and out-edges, and its logit effects."""

    edges: pl.DataFrame
    logits: pl.DataFrame


# -- input checks ------------------------------------------------------------------------------


def parse_node(value: str | Node) -> Node:
    """``"5.10603"`` (or a :class:`Node`) -> Node; :class:`InputError` for anything else."""
    if isinstance(value, Node):
        return value
    try:
        return Node.parse(str(value))
    except ValueError:
        raise InputError(
            f"unknown feature format {str(value)!r}: write features as LAYER.FEATURE (residual) or "
            f"LAYER.SITE.FEATURE with SITE res, att, mlp or tc, e.g. 5.10603, 5.att.12"
        ) from None


_PATH_SPLIT = re.compile(r"\s*(?:->|,|\s)\s*")


def parse_path(value: str | Iterable[str | Node]) -> list[Node]:
    """``"5.1 -> 6.2 -> 7.3"`` (or ``"5.1,6.2,7.3"``, or a list) -> its features, 2 to 7 of them."""
    parts = [p for p in _PATH_SPLIT.split(value.strip()) if p] if isinstance(value, str) else list(value)
    nodes = [parse_node(p) for p in parts]
    if not 2 <= len(nodes) <= MAX_PATH_EDGES + 1:
        raise InputError(f"a path has 2 to {MAX_PATH_EDGES + 1} features, got {len(nodes)}")
    return nodes


_SIGN_CHARS = {"+": 1, "-": -1, "*": 0, "0": 0, ".": 0}


def parse_signs(value: str | Sequence[int] | None, n_edges: int) -> list[int] | None:
    """``"+-*"`` or ``[1, -1, 0]`` -> a sign pattern of ``n_edges`` entries (0: either sign)."""
    if value is None:
        return None
    if isinstance(value, str):
        if any(c not in _SIGN_CHARS for c in value):
            raise InputError(
                f"sign pattern {value!r}: use + (promotes), - (suppresses) or * (either), one per edge"
            )
        signs = [_SIGN_CHARS[c] for c in value]
    else:
        signs = [int(s) for s in value]
        if any(s not in (-1, 0, 1) for s in signs):
            raise InputError(f"sign pattern {list(value)!r}: entries are -1, +1 or 0 (either)")
    if len(signs) != n_edges:
        raise InputError(f"sign pattern {value!r} has {len(signs)} entries for {n_edges} edges")
    return signs


def _positive(name: str, value: int) -> int:
    if value < 1:
        raise InputError(f"{name} must be >= 1, got {value}")
    return value


def _support(value: int) -> int:
    if value < 2:
        raise InputError(f"min_support must be >= 2 (a path seen in one prompt does not recur), got {value}")
    return value


def _nonnegative(name: str, value: float) -> float:
    if not value >= 0:
        raise InputError(f"{name} must be >= 0, got {value}")
    return float(value)


def strength_params(
    db: Database, run: int | None, min_rel_weight: float, max_p: float | None, experiment: int | None
) -> dict:
    """The strength filters of the path helpers, checked: ``min_rel_weight`` in [0, 1],
    ``max_p`` in (0, 1] or None, ``experiment`` a complete noise experiment (of ``run``)."""
    if not 0 <= min_rel_weight <= 1:
        raise InputError(f"min_rel_weight must be between 0 and 1, got {min_rel_weight}")
    if max_p is not None and not 0 < max_p <= 1:
        raise InputError(f"max_p must be in (0, 1], got {max_p}")
    if experiment is not None:
        if max_p is None:
            raise InputError("a noise experiment only applies with max_p (a p-value threshold)")
        if not db.fetchone(NOISE_EXPERIMENT, {"experiment": experiment, "run": run})[0]:
            where = f" of run {run}" if run is not None else ""
            raise NotFoundError(f"no complete noise experiment {experiment}{where} in {db.path}")
    return {"min_rel_weight": float(min_rel_weight), "max_p": max_p, "experiment": experiment}


def check_run(db: Database, run: int | None) -> None:
    """:class:`NotFoundError` unless ``run`` is None or a run of the database."""
    if run is None:
        return
    runs = [r[0] for r in db.fetchall(RUN_IDS)]
    if run not in runs:
        known = ", ".join(map(str, runs)) or "none"
        raise NotFoundError(f"no run {run} in {db.path} (runs: {known})")


def check_prompt(db: Database, prompt: int, run: int | None) -> None:
    """:class:`NotFoundError` unless some run (or ``run``) has prompt ``prompt``."""
    check_run(db, run)
    if not db.fetchall(PROMPT_RUNS, {"prompt": prompt, "run": run}):
        where = f"run {run}" if run is not None else db.path
        raise NotFoundError(
            f"no prompt {prompt} in {where} (prompt ids are 0-based positions in the prompt file)"
        )


def check_node(db: Database, node: Node, run: int | None) -> None:
    """:class:`NotFoundError` unless some SAE of the run(s) has ``node``'s layer, site and feature."""
    check_run(db, run)
    saes = db.fetchall(SAE_LAYERS, {"run": run})
    if not saes:
        return  # nothing recorded about the SAEs (e.g. a bulk-loaded database): nothing to check
    sizes = {(layer, site): d_sae for layer, site, d_sae in saes}
    key = (node.layer, node.site_kind)
    if key not in sizes:
        have = ", ".join(_sae_label(*k) for k in sorted(sizes, key=lambda k: (k[0], SITE_RANK.get(k[1], 9))))
        what = "SAE" if node.site_kind == "resid" else f"{node.site_kind} SAE"
        raise NotFoundError(f"no {what} at layer {node.layer} for feature {node} (layers: {have})")
    if node.index >= sizes[key]:
        raise NotFoundError(
            f"feature {node} is out of range: layer {_sae_label(*key)} has {sizes[key]} features"
        )


def _sae_label(layer: int, site_kind: str) -> str:
    """``5`` for the residual SAE of layer 5, ``5.att`` for its attention SAE, and so on."""
    return str(layer) if site_kind == "resid" else f"{layer}.{SITE_SHORT.get(site_kind, site_kind)}"


# -- running -----------------------------------------------------------------------------------


def fetch(
    db: Database, sql: str, params: dict | None = None, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """Run ``sql`` through the guard rails and return a polars frame. A cut at the row cap is
    reported to :func:`query.rows.capture` (:func:`query.rows.fetch_rows` returns it with the
    frame; :func:`query.rows.with_cut` with a helper's result)."""
    return fetch_rows(db, sql, params, limits).frame


# -- the helpers -------------------------------------------------------------------------------


def prompt_graph(
    db: Database,
    prompt: int,
    run: int | None = None,
    k: int = 10,
    min_path: int = 2,
    min_weight: float = 0.0,
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """One prompt's graph pruned the seed's way: top ``k`` edges per upstream feature by
    |weight| (at least ``min_weight``), then only edges on paths of >= ``min_path`` edges."""
    params = {
        "prompt": prompt,
        "run": run,
        "k": _positive("k", k),
        "min_path": _positive("min_path", min_path),
        "min_weight": _nonnegative("min_weight", min_weight),
    }
    check_prompt(db, prompt, run)
    return fetch(db, PROMPT_GRAPH, params, limits)


def recurring_paths(
    db: Database,
    n_edges: int = 3,
    min_support: int = 2,
    run: int | None = None,
    min_layer: int | None = None,
    max_layer: int | None = None,
    signs: str | Sequence[int] | None = None,
    min_weight: float = 0.0,
    tag: str | None = None,
    limit: int | None = None,
    limits: QueryLimits | None = None,
    min_rel_weight: float = 0.0,
    max_p: float | None = None,
    experiment: int | None = None,
    top: int | None = None,
    rank_by: str = "support",
) -> pl.DataFrame:
    """Chains of ``n_edges`` edges (2-6), each step a stored edge (it may skip layers), with the
    same features and signs, found in at least ``min_support`` prompts; most supported first
    (``rank_by="strength"``: largest smallest-|mean weight| along the chain first).

    ``top``: only the first ``top`` chains in that order, found exactly without enumerating the
    others (ties broken by run, then nodes as (layer, feature) pairs, then signs; docs/sql.md);
    None: every chain. ``limit`` cuts the result after the query (kept for older callers).
    An occurrence counts only if its |weight| is at least ``min_weight`` and ``min_rel_weight``
    times its ablation's largest |weight|, and (``max_p`` set) its p-value against the noise
    ``experiment`` (None: each run's latest) is below ``max_p``. ``support_any`` is the support
    without these filters."""
    if not 2 <= n_edges <= MAX_PATH_EDGES:
        raise InputError(f"n_edges must be between 2 and {MAX_PATH_EDGES}, got {n_edges}")
    if rank_by not in RANKINGS:
        raise InputError(f"rank_by must be one of {', '.join(RANKINGS)}, got {rank_by!r}")
    params = {
        "n_edges": n_edges,
        "min_support": _support(min_support),
        "run": run,
        "min_layer": min_layer,
        "max_layer": max_layer,
        "sign_pattern": parse_signs(signs, n_edges),
        "min_weight": _nonnegative("min_weight", min_weight),
        "prompt_tag": tag,
        "top": None if top is None else _positive("top", top),
        "rank_by": rank_by,
    }
    check_run(db, run)
    params.update(strength_params(db, run, min_rel_weight, max_p, experiment))
    if limit is None:
        return fetch(db, RECURRING_PATHS, params, limits)
    return fetch(db, RECURRING_PATHS_LIMITED, {**params, "limit": _positive("limit", limit)}, limits)


def tag_specific_paths(
    db: Database,
    tag: str,
    n_edges: int = 2,
    min_support: int = 2,
    run: int | None = None,
    min_weight: float = 0.0,
    min_rel_weight: float = 0.0,
    max_p: float | None = None,
    experiment: int | None = None,
    top: int | None = 20,
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """The recurring chains most specific to prompt tag ``tag``: support and share of the tag's
    prompts, the largest share in another tag, and ``specificity`` (the difference); most
    specific first. Filters as for :func:`recurring_paths`."""
    if not 2 <= n_edges <= MAX_PATH_EDGES:
        raise InputError(f"n_edges must be between 2 and {MAX_PATH_EDGES}, got {n_edges}")
    check_run(db, run)
    if not db.fetchone(TAG_RUNS, {"tag": tag, "run": run})[0]:
        raise NotFoundError(f"no prompt tagged {tag!r}" + (f" in run {run}" if run is not None else ""))
    params = {
        "tag": tag,
        "n_edges": n_edges,
        "min_support": _support(min_support),
        "run": run,
        "min_weight": _nonnegative("min_weight", min_weight),
        "top": None if top is None else _positive("top", top),
        **strength_params(db, run, min_rel_weight, max_p, experiment),
    }
    return fetch(db, TAG_SPECIFIC_PATHS, params, limits)


def path_prompts(
    db: Database,
    path: str | Iterable[str | Node],
    run: int | None = None,
    signs: str | Sequence[int] | None = None,
    min_weight: float = 0.0,
    tag: str | None = None,
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """The prompts in which every edge of ``path`` occurs, with the edge weights in each."""
    nodes = parse_path(path)
    params = {
        "path_nodes": [str(n) for n in nodes],
        "run": run,
        "sign_pattern": parse_signs(signs, len(nodes) - 1),
        "min_weight": _nonnegative("min_weight", min_weight),
        "prompt_tag": tag,
    }
    for node in nodes:
        check_node(db, node, run)
    return fetch(db, PATH_PROMPTS, params, limits)


def feature_edges(
    db: Database,
    feature: str | Node,
    run: int | None = None,
    top: int | None = 20,
    min_count: int = 1,
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """In- and out-edges of ``feature`` across prompts: count, mean, std, sign consistency;
    the ``top`` neighbours per direction (None: all) seen in at least ``min_count`` prompts."""
    node = parse_node(feature)
    check_node(db, node, run)
    params = {
        "layer": node.layer,
        "feature": node.feature,
        "run": run,
        "top": None if top is None else _positive("top", top),
        "min_count": _positive("min_count", min_count),
    }
    return fetch(db, FEATURE_EDGES, params, limits)


def feature_logits(
    db: Database,
    feature: str | Node,
    run: int | None = None,
    top: int = 10,
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """Tokens that ablating ``feature`` promotes and suppresses most on average."""
    node = parse_node(feature)
    check_node(db, node, run)
    params = {"layer": node.layer, "feature": node.feature, "run": run, "top": _positive("top", top)}
    return fetch(db, FEATURE_LOGITS, params, limits)


def neighbourhood(
    db: Database,
    feature: str | Node,
    run: int | None = None,
    top_edges: int | None = 20,
    top_tokens: int = 10,
    limits: QueryLimits | None = None,
) -> Neighbourhood:
    """A feature's in- and out-edges and its aggregated logit effects."""
    return Neighbourhood(
        feature_edges(db, feature, run, top=top_edges, limits=limits),
        feature_logits(db, feature, run, top=top_tokens, limits=limits),
    )


def top_contexts(
    db: Database,
    feature: str | Node,
    run: int | None = None,
    top: int = 10,
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """The prompts where ``feature`` activates most, with its activation at every token."""
    return _feature_top(db, TOP_CONTEXTS, feature, run, top, limits)


def _feature_top(
    db: Database, sql: str, feature: str | Node, run: int | None, top: int, limits: QueryLimits | None
) -> pl.DataFrame:
    """A per-feature macro that takes ``node``, ``run`` and ``top``, after checking the feature."""
    node = parse_node(feature)
    check_node(db, node, run)
    return fetch(db, sql, {"node": str(node), "run": run, "top": _positive("top", top)}, limits)


def compare_prompts(
    db: Database,
    prompt_a: int,
    prompt_b: int,
    run: int | None = None,
    min_weight: float = 0.0,
    limits: QueryLimits | None = None,
) -> pl.DataFrame:
    """Edges of two prompts side by side: ``shared``, ``only_a`` and ``only_b``."""
    params = {
        "prompt_a": prompt_a,
        "prompt_b": prompt_b,
        "run": run,
        "min_weight": _nonnegative("min_weight", min_weight),
    }
    check_prompt(db, prompt_a, run)
    check_prompt(db, prompt_b, run)
    return fetch(db, COMPARE_PROMPTS, params, limits)


__all__ = [
    "DASHBOARD_LIMITS",
    "Neighbourhood",
    "compare_prompts",
    "feature_edges",
    "feature_logits",
    "fetch",
    "neighbourhood",
    "parse_node",
    "parse_path",
    "parse_signs",
    "path_prompts",
    "prompt_graph",
    "recurring_paths",
    "RANKINGS",
    "RECOMMENDED_MIN_REL_WEIGHT",
    "strength_params",
    "tag_specific_paths",
    "top_contexts",
]
