"""One feature's page: its SAE and Neuronpedia link, its noise statistics and response curves,
and busy features to start exploring from.

Sign convention everywhere: ablated minus clean (a negative edge weight or dprob means that
ablating the feature suppresses the target).
"""

from __future__ import annotations

import polars as pl

from featuregraph.query.api import fetch, parse_node
from featuregraph.store.db import Database, QueryLimits
from featuregraph.store.models import Node, decode_feature

FEATURE_SAE = """
SELECT run_id, layer, site_kind, hook_name, d_sae, neuronpedia_id, release, sae_id, path
FROM run_saes WHERE layer = $layer AND site_kind = $site AND ($run IS NULL OR run_id = $run) ORDER BY run_id
"""
FEATURE_NOISE = """
SELECT nf.experiment_id, nf.run_id, nf.n_contexts, nf.n_active, nf.n_samples, nf.null_mode,
       1.0 / (1 + nf.n_samples) AS smallest_p, nf.edge_max_median, nf.edge_max_p95,
       nf.logit_max_median, nf.logit_max_p95
FROM noise_features nf
WHERE nf.layer = $layer AND nf.feature = $feature AND ($run IS NULL OR nf.run_id = $run)
ORDER BY nf.experiment_id DESC
"""
# In context (the run's stored edges out of the feature) against noise, per downstream feature.
FEATURE_EDGE_SNR = """
SELECT fg_node(down_layer, down_feature) AS down, count(*) AS prompts, avg(weight) AS mean_weight,
       median(p_value) AS median_p, count(*) FILTER (p_value < 0.01) AS prompts_p_below_001,
       any_value(noise_mean) AS noise_mean, any_value(noise_std) AS noise_std,
       avg(abs(z_score)) AS mean_abs_z, avg(noise_ratio) AS mean_noise_ratio
FROM edge_snr_at($experiment)
WHERE up_layer = $layer AND up_feature = $feature
GROUP BY down_layer, down_feature
ORDER BY prompts_p_below_001 DESC, median_p NULLS LAST, prompts DESC
LIMIT $top
"""
FEATURE_LOGIT_SNR = """
SELECT s.token_id, any_value(v.token) AS token, count(*) AS prompts, avg(s.dprob) AS mean_dprob,
       median(s.p_value) AS median_p, count(*) FILTER (s.p_value < 0.01) AS prompts_p_below_001,
       any_value(s.noise_dprob_mean) AS noise_dprob_mean, any_value(s.noise_dprob_std) AS noise_dprob_std,
       avg(abs(s.z_score)) AS mean_abs_z, avg(s.noise_ratio) AS mean_noise_ratio
FROM logit_snr_at($experiment) s
LEFT JOIN vocab v ON v.run_id = s.run_id AND v.token_id = s.token_id
WHERE s.layer = $layer AND s.feature = $feature
GROUP BY s.token_id
ORDER BY prompts_p_below_001 DESC, median_p NULLS LAST, prompts DESC
LIMIT $top
"""
FEATURE_CURVES = """
SELECT experiment_id, run_id, spec->>'up' AS up, spec->>'down' AS down, spec->>'prompt' AS prompt,
       summary::VARCHAR AS summary, finished_at
FROM experiments
WHERE kind = 'curve' AND status = 'complete' AND ($run IS NULL OR run_id = $run)
  AND (spec->>'up' = $node OR spec->>'down' = $node)
ORDER BY experiment_id DESC
"""


def feature_sae(
    db: Database, node: str | Node, run: int | None = None, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """The SAE(s) a feature belongs to (its layer and site kind), with their Neuronpedia id when known."""
    node = parse_node(node)
    return fetch(db, FEATURE_SAE, {"layer": node.layer, "site": node.site_kind, "run": run}, limits)


def neuronpedia_url(neuronpedia_id: str | None, feature: int) -> str | None:
    """``https://neuronpedia.org/{neuronpedia_id}/{index}``, or None without an id.

    ``feature`` is the stored feature (encoded for non-residual sites, docs/sql.md#feature-names);
    the link names its index within its own SAE, and ``neuronpedia_id`` (``gpt2-small/5-att-kk``,
    as run_saes stores it) names the SAE.
    """
    if not neuronpedia_id:
        return None
    return f"https://neuronpedia.org/{neuronpedia_id.strip('/')}/{decode_feature(int(feature))[1]}"


def feature_noise(
    db: Database, node: str | Node, run: int | None = None, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """The feature's row of every noise experiment: how often it is active in the contexts and
    the size of what ablating it does there."""
    node = parse_node(node)
    return fetch(db, FEATURE_NOISE, {"layer": node.layer, "feature": node.feature, "run": run}, limits)


def feature_edge_snr(
    db: Database, node: str | Node, experiment: int, top: int = 20, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """The feature's out-edges in context against their noise, one row per downstream feature."""
    node = parse_node(node)
    params = {"layer": node.layer, "feature": node.feature, "experiment": experiment, "top": top}
    return fetch(db, FEATURE_EDGE_SNR, params, limits)


def feature_logit_snr(
    db: Database, node: str | Node, experiment: int, top: int = 20, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """The feature's logit effects in context against their noise, one row per token."""
    node = parse_node(node)
    params = {"layer": node.layer, "feature": node.feature, "experiment": experiment, "top": top}
    return fetch(db, FEATURE_LOGIT_SNR, params, limits)


def feature_curves(
    db: Database, node: str | Node, run: int | None = None, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """Response-curve experiments in which the feature is the upstream or downstream one."""
    node = parse_node(node)
    return fetch(db, FEATURE_CURVES, {"node": str(node), "run": run}, limits)


# Features by their out-edges over a run's prompts. On a big database, from a 2% sample of
# the storage vectors of edge_summary's base (the physical table, sorted by upstream feature, so
# a busy feature's rows are where a sample finds them; edges since the last compaction are left
# out of the sample): exact counts would read every signed edge.
BUSY_FEATURES = """
SELECT fg_node(up_layer, up_feature) AS feature, up_layer AS layer, sum(n)::BIGINT AS edges
FROM edge_summary WHERE run_id = $run
GROUP BY up_layer, up_feature
ORDER BY edges DESC, up_layer, up_feature
LIMIT $limit
"""
BUSY_FEATURES_SAMPLED = BUSY_FEATURES.replace(
    "FROM edge_summary", "FROM edge_summary_base TABLESAMPLE 2% (system, 7)"
)
SUMMARY_ROWS = "SELECT count(*) FROM edge_summary_base"  # a size estimate: the base's row count is metadata
EXACT_UP_TO_ROWS = 1_000_000


def busy_features(db: Database, run: int, limit: int = 20, limits: QueryLimits | None = None) -> pl.DataFrame:
    """Features with many out-edges over a run's prompts (sampled on big databases): starting
    points to explore."""
    big = db.fetchone(SUMMARY_ROWS)[0] > EXACT_UP_TO_ROWS
    return fetch(db, BUSY_FEATURES_SAMPLED if big else BUSY_FEATURES, {"run": run, "limit": limit}, limits)


__all__ = [
    "busy_features",
    "feature_curves",
    "feature_edge_snr",
    "feature_logit_snr",
    "feature_noise",
    "feature_sae",
    "neuronpedia_url",
]
