"""Experiments' results: noise statistics against the effects in context, path validations and
response curves.

Sign convention everywhere: ablated minus clean (a negative edge weight or dprob means that
ablating the feature suppresses the target).
"""

from __future__ import annotations

import polars as pl

from featuregraph.query.api import fetch
from featuregraph.store.db import Database, QueryLimits

# Rows behind the noise page's histograms: a random sample keeps the page fast on big databases.
HISTOGRAM_SAMPLE_ROWS = 20_000

CURVE_POINTS = """
SELECT c.coefficient, c.down_activation, c.token_id, v.token, c.prob, c.logp
FROM curve_points c
LEFT JOIN vocab v ON v.run_id = c.run_id AND v.token_id = c.token_id
WHERE c.experiment_id = $experiment
ORDER BY c.token_id, c.coefficient
"""
VALIDATION_RESULTS = """
SELECT prompt_index, text, arm, features, answer_token_id, answer_dlogp, answer_dlogit_diff, wrong_token_id,
       logit_diff_clean, answer_dprob, answer_dprob_frac, total_variation, inactive_features, activation_ratio,
       n_unmatched
FROM validation_results WHERE experiment_id = $experiment ORDER BY prompt_index, arm DESC
"""
VALIDATION_TOKENS = """
SELECT t.arm, t.kind, t.rank, t.token_id, v.token, t.p_clean, t.p_ablated, t.dprob, t.dprob_frac
FROM validation_tokens t
LEFT JOIN vocab v ON v.run_id = t.run_id AND v.token_id = t.token_id
WHERE t.experiment_id = $experiment AND t.prompt_index = $prompt_index
ORDER BY t.arm, t.kind, t.rank
"""
# The noise page reads a random sample of the run's stored effects (HISTOGRAM_SAMPLE_ROWS rows,
# the same sample every time) next to the noise floor of the feature that caused each: the 95th
# percentile of its largest effect per noise sample (noise_features), the statistic the p-values
# compare the stored, top-k-selected effects with. Only small tables are joined, so the page stays fast.
# Histograms: log10 |value| in quarter-decade bins.
EDGE_NOISE_HISTOGRAM = f"""
WITH e AS (
    SELECT * FROM (SELECT up_layer, up_feature, weight FROM edges WHERE run_id = $run)
    USING SAMPLE reservoir({HISTOGRAM_SAMPLE_ROWS} ROWS) REPEATABLE (7)
),
j AS MATERIALIZED (
    SELECT abs(e.weight) AS in_context, nf.edge_max_p95 AS noise_p95
    FROM e
    LEFT JOIN noise_features nf
      ON nf.experiment_id = $experiment AND nf.layer = e.up_layer AND nf.feature = e.up_feature
)
SELECT 'in context |weight|' AS series, floor(log10(in_context) * 4) / 4 AS bin, count(*) AS n
FROM j WHERE in_context > 0 GROUP BY ALL
UNION ALL
SELECT 'noise p95 of the feature', floor(log10(noise_p95) * 4) / 4, count(*) FROM j WHERE noise_p95 > 0 GROUP BY ALL
ORDER BY series, bin
"""
LOGIT_NOISE_HISTOGRAM = f"""
WITH l AS (
    SELECT * FROM (SELECT layer, feature, dprob FROM logit_effects WHERE run_id = $run)
    USING SAMPLE reservoir({HISTOGRAM_SAMPLE_ROWS} ROWS) REPEATABLE (7)
),
j AS MATERIALIZED (
    SELECT abs(l.dprob) AS in_context, nf.logit_max_p95 AS noise_p95
    FROM l
    LEFT JOIN noise_features nf ON nf.experiment_id = $experiment AND nf.layer = l.layer AND nf.feature = l.feature
)
SELECT 'in context |dprob|' AS series, floor(log10(in_context) * 4) / 4 AS bin, count(*) AS n
FROM j WHERE in_context > 0 GROUP BY ALL
UNION ALL
SELECT 'noise p95 of the feature', floor(log10(noise_p95) * 4) / 4, count(*) FROM j WHERE noise_p95 > 0 GROUP BY ALL
ORDER BY series, bin
"""
# Per feature, from the same sample of edges: mean |weight| in context against the mean size of
# largest effect in the noise contexts (noise_features.edge_max_median).
FEATURE_NOISE_SCATTER = f"""
WITH e AS (
    SELECT * FROM (SELECT up_layer, up_feature, weight FROM edges WHERE run_id = $run)
    USING SAMPLE reservoir({HISTOGRAM_SAMPLE_ROWS} ROWS) REPEATABLE (7)
),
ctx AS (
    SELECT up_layer AS layer, up_feature AS feature, avg(abs(weight)) AS in_context_abs_mean, count(*) AS edges
    FROM e GROUP BY ALL
)
SELECT fg_node(c.layer, c.feature) AS feature, c.layer, c.edges AS sampled_edges, c.in_context_abs_mean,
       nf.edge_max_median AS noise_max_median, nf.n_active, nf.n_contexts
FROM ctx c
JOIN noise_features nf ON nf.experiment_id = $experiment AND nf.layer = c.layer AND nf.feature = c.feature
WHERE nf.edge_max_median > 0
ORDER BY c.edges DESC, c.layer, c.feature
LIMIT $limit
"""
# Recurring signed edges (in at least min_prompts prompts) against their own noise (noise_edges):
# z of the mean weight = (mean - noise mean) / noise spread. One scan of noise_edges gives both
# the histogram of |z| over all of them (rows with kind = 'histogram': bin, n; the last bin holds
# everything from z_cap up) and the `top` furthest from their noise (kind = 'top').
RECURRING_EDGE_SNR = """
WITH j AS MATERIALIZED (
    SELECT s.up_layer, s.up_feature, s.down_layer, s.down_feature, s.sign, s.n, s.sum_weight / s.n AS mean_weight,
           ne.mean AS noise_mean, ne.std AS noise_std, ne.abs_p95 AS noise_abs_p95,
           (s.sum_weight / s.n - ne.mean) / nullif(ne.std, 0) AS z_of_mean
    FROM edge_summary s
    JOIN noise_edges ne
      ON ne.experiment_id = $experiment AND ne.up_layer = s.up_layer AND ne.up_feature = s.up_feature
     AND ne.down_layer = s.down_layer AND ne.down_feature = s.down_feature
    WHERE s.run_id = $run AND s.n >= $min_prompts
),
top AS (
    SELECT * FROM j ORDER BY abs(z_of_mean) DESC, n DESC, up_layer, up_feature, down_feature LIMIT $top
)
SELECT 'top' AS kind, fg_node(up_layer, up_feature) AS up, fg_node(down_layer, down_feature) AS down, sign,
       n AS prompts, mean_weight, noise_mean, noise_std, noise_abs_p95, z_of_mean, NULL::DOUBLE AS bin
FROM top
UNION ALL
SELECT 'histogram', NULL, NULL, NULL, count(*), NULL, NULL, NULL, NULL, NULL, least(floor(abs(z_of_mean) * 2) / 2, $z_cap)
FROM j GROUP BY least(floor(abs(z_of_mean) * 2) / 2, $z_cap)
"""


# How many of each tag's stored effects are significant against one noise experiment. On prompts
# that are themselves unrelated text (never part of the baseline) this is the calibration check:
# about 1% (at most) below p = 0.01.
SIGNIFICANCE_BY_TAG = """
WITH e AS (
    SELECT coalesce(p.tag, '(none)') AS tag, 'edges' AS effect, s.p_value
    FROM edge_snr_at($experiment) s JOIN prompts p USING (run_id, prompt_id) WHERE s.run_id = $run
),
l AS (
    SELECT coalesce(p.tag, '(none)') AS tag, 'logit effects' AS effect, s.p_value
    FROM logit_snr_at($experiment) s JOIN prompts p USING (run_id, prompt_id) WHERE s.run_id = $run
)
SELECT tag, effect, count(*) AS stored, count(p_value) AS with_null,
       avg((p_value < 0.01)::INT) AS share_p_below_001, avg((p_value < 0.001)::INT) AS share_p_below_0001,
       median(p_value) AS median_p
FROM (SELECT * FROM e UNION ALL SELECT * FROM l)
GROUP BY ALL ORDER BY tag, effect
"""


def significance_by_tag(db: Database, run: int, experiment: int, limits: QueryLimits | None = None) -> pl.DataFrame:
    """Per prompt tag and kind of effect (edges, logit effects): how many stored effects have a
    noise null, and the share with p below 0.01 and 0.001 (shares among those with a null)."""
    return fetch(db, SIGNIFICANCE_BY_TAG, {"run": run, "experiment": experiment}, limits)


def curve_points(db: Database, experiment: int, limits: QueryLimits | None = None) -> pl.DataFrame:
    """A response curve: per coefficient, the downstream activation and each token's probability."""
    return fetch(db, CURVE_POINTS, {"experiment": experiment}, limits)


def validation_results(db: Database, experiment: int, limits: QueryLimits | None = None) -> pl.DataFrame:
    """Per prompt and arm (path, control) of a validation experiment, what the joint ablation did."""
    return fetch(db, VALIDATION_RESULTS, {"experiment": experiment}, limits)


def validation_tokens(
    db: Database, experiment: int, prompt_index: int, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """The tokens behind one prompt's validation results (clean top, promoted, suppressed)."""
    return fetch(db, VALIDATION_TOKENS, {"experiment": experiment, "prompt_index": prompt_index}, limits)


def edge_noise_histogram(
    db: Database, run: int, experiment: int, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """For a sample of the run's edges: log10 |weight| in context next to the noise p95 of the
    feature that caused each; columns series, bin, n."""
    return fetch(db, EDGE_NOISE_HISTOGRAM, {"run": run, "experiment": experiment}, limits)


def logit_noise_histogram(
    db: Database, run: int, experiment: int, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """For a sample of the run's logit effects: log10 |dprob| in context next to the noise p95 of
    the feature that caused each; columns series, bin, n."""
    return fetch(db, LOGIT_NOISE_HISTOGRAM, {"run": run, "experiment": experiment}, limits)


def feature_noise_scatter(
    db: Database, run: int, experiment: int, limit: int = 5000, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """Per feature of a sample of the run's edges: mean |weight| in context and in noise."""
    return fetch(db, FEATURE_NOISE_SCATTER, {"run": run, "experiment": experiment, "limit": limit}, limits)


def recurring_edge_snr(
    db: Database,
    run: int,
    experiment: int,
    min_prompts: int = 2,
    top: int = 50,
    z_cap: float = 20.0,
    limits: QueryLimits | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Signed edges seen in at least ``min_prompts`` prompts against their noise: (the ``top``
    furthest from it by |z of the mean weight|, the histogram of that |z| over all of them)."""
    params = {"run": run, "experiment": experiment, "min_prompts": min_prompts, "top": top, "z_cap": z_cap}
    rows = fetch(db, RECURRING_EDGE_SNR, params, limits)
    best = (
        rows.filter(pl.col("kind") == "top")
        .drop("kind", "bin")
        .sort(pl.col("z_of_mean").abs(), descending=True)
    )
    histogram = (
        rows.filter(pl.col("kind") == "histogram").select("bin", pl.col("prompts").alias("n")).sort("bin")
    )
    return best, histogram


__all__ = [
    "HISTOGRAM_SAMPLE_ROWS",
    "curve_points",
    "edge_noise_histogram",
    "feature_noise_scatter",
    "logit_noise_histogram",
    "recurring_edge_snr",
    "significance_by_tag",
    "validation_results",
    "validation_tokens",
]
