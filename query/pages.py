"""The dashboard's own read queries, beside the SQL helpers of query/api.py.

Every function takes an open :class:`store.db.Database` and returns a polars frame (or a small
Python value), binding every value as a parameter; the dashboard never writes SQL itself.
:func:`open_reader` opens a database read-only for one interaction, and turns "a writer holds
the lock" into :class:`DatabaseBusyError` so that the dashboard can say an ingest is writing.

Sign convention everywhere: ablated minus clean (a negative edge weight or dprob means that
ablating the feature suppresses the target).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import polars as pl

from featuregraph.errors import DatabaseError
from featuregraph.query.api import fetch, parse_node
from featuregraph.query.readonly import check_read_only
from featuregraph.store.db import LOCK_WAIT_ENV, SCHEMA_TABLES, Database, QueryLimits, open_database, quote_identifier
from featuregraph.store.models import Node

# Readers of the dashboard wait this long for a writer's lock before saying an ingest is writing.
DASHBOARD_LOCK_WAIT_S = 2.0
# Rows behind the noise page's histograms: a random sample keeps the page fast on big databases.
HISTOGRAM_SAMPLE_ROWS = 20_000


class DatabaseBusyError(DatabaseError):
    """Another process (an ingest) holds the database's write lock."""


def open_reader(path: str | Path, wait_s: float | None = None) -> Database:
    """Open ``path`` read-only for one interaction (close it soon after).

    Waits up to ``wait_s`` seconds (default: ``FEATUREGRAPH_LOCK_WAIT``, else 2 s) for a
    writer's lock; if it is still held, raises :class:`DatabaseBusyError` naming the writer.
    """
    if wait_s is None:
        try:
            wait_s = float(os.environ.get(LOCK_WAIT_ENV, DASHBOARD_LOCK_WAIT_S))
        except ValueError:
            wait_s = DASHBOARD_LOCK_WAIT_S
    try:
        return open_database(path, read_only=True, wait_s=wait_s)
    except DatabaseError as exc:
        if "in use by another process" in str(exc):
            raise DatabaseBusyError(str(exc)) from exc
        raise


def database_stamp(path: str | Path) -> tuple[int, int, int]:
    """Changes whenever the database file (or its write-ahead log) changes: a cache key."""
    p = Path(path)
    st = p.stat()
    wal = Path(str(p) + ".wal")
    wal_mtime = wal.stat().st_mtime_ns if wal.exists() else 0
    return (st.st_mtime_ns, st.st_size, wal_mtime)


# -- overview ----------------------------------------------------------------------------------

RUNS = """
SELECT r.run_id, r.status, r.model, r.model_source, r.model_sha256, r.prompts_source, r.n_prompts,
       (SELECT count(*) FROM prompts p WHERE p.run_id = r.run_id) AS prompts_done,
       (SELECT count(*) FROM run_saes s WHERE s.run_id = r.run_id) AS n_saes,
       r.coefficient, r.edge_top_k, r.edge_floor, r.logit_top_k, r.top_next_k, r.prepend_bos,
       r.read_position, r.device, r.dtype, r.featuregraph_version, r.torch_version,
       r.sae_lens_version, r.transformer_lens_version, r.started_at, r.finished_at
FROM runs r ORDER BY r.run_id
"""
RUN_SAES = """
SELECT run_id, layer, site_kind, hook_name, d_in, d_sae, architecture, release, sae_id, path,
       neuronpedia_id, sha256
FROM run_saes WHERE $run IS NULL OR run_id = $run ORDER BY run_id, layer
"""
# Table names come from featuregraph.store.db.SCHEMA_TABLES and the summary tables, never from input.
COUNT_ROWS = "SELECT count(*) FROM {table}"
COUNTED_TABLES = tuple(sorted(SCHEMA_TABLES | {"edge_summary", "edge_occurrences", "experiments"}))
PROMPTS_PER_TAG = """
SELECT run_id, coalesce(tag, '(none)') AS tag, count(*) AS prompts, sum(n_tokens)::BIGINT AS tokens,
       sum(n_ablations)::BIGINT AS ablations
FROM prompts WHERE $run IS NULL OR run_id = $run
GROUP BY ALL ORDER BY run_id, prompts DESC, tag
"""
EXPERIMENTS = """
SELECT experiment_id, run_id, kind, status, spec::VARCHAR AS spec, summary::VARCHAR AS summary, device,
       featuregraph_version, started_at, finished_at
FROM experiments
WHERE ($run IS NULL OR run_id = $run) AND ($kind IS NULL OR kind = $kind)
ORDER BY experiment_id DESC
"""


def schema_version(db: Database) -> int:
    """The database's schema version (its newest applied migration)."""
    from featuregraph.store.migrate import current_version

    return current_version(db)


def runs(db: Database, limits: QueryLimits | None = None) -> pl.DataFrame:
    """Every run with its provenance and settings, and how many of its prompts are in."""
    return fetch(db, RUNS, None, limits)


def run_saes(db: Database, run: int | None = None, limits: QueryLimits | None = None) -> pl.DataFrame:
    """The SAEs of a run (or of every run)."""
    return fetch(db, RUN_SAES, {"run": run}, limits)


def row_counts(db: Database) -> pl.DataFrame:
    """Rows per table of the schema."""
    counts = [(t, int(db.fetchone(COUNT_ROWS.format(table=quote_identifier(t)))[0])) for t in COUNTED_TABLES]
    return pl.DataFrame(counts, schema={"table": pl.String, "rows": pl.Int64}, orient="row")


def prompts_per_tag(db: Database, run: int | None = None, limits: QueryLimits | None = None) -> pl.DataFrame:
    """Prompts, tokens and ablations per run and tag."""
    return fetch(db, PROMPTS_PER_TAG, {"run": run}, limits)


def experiments(
    db: Database, run: int | None = None, kind: str | None = None, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """Experiments (noise, validation, curve) of a run, newest first; spec and summary as JSON text."""
    return fetch(db, EXPERIMENTS, {"run": run, "kind": kind}, limits)


# -- prompts -----------------------------------------------------------------------------------

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


# -- features ----------------------------------------------------------------------------------

FEATURE_SAE = """
SELECT run_id, layer, hook_name, d_sae, neuronpedia_id, release, sae_id, path
FROM run_saes WHERE layer = $layer AND ($run IS NULL OR run_id = $run) ORDER BY run_id
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
SELECT down_layer || '.' || down_feature AS down, count(*) AS prompts, avg(weight) AS mean_weight,
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
    """The SAE(s) a feature belongs to, with their Neuronpedia id when known."""
    node = parse_node(node)
    return fetch(db, FEATURE_SAE, {"layer": node.layer, "run": run}, limits)


def neuronpedia_url(neuronpedia_id: str | None, feature: int) -> str | None:
    """``https://neuronpedia.org/{neuronpedia_id}/{index}``, or None without an id."""
    if not neuronpedia_id:
        return None
    return f"https://neuronpedia.org/{neuronpedia_id.strip('/')}/{int(feature)}"


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
# edge_summary's storage vectors (it is sorted by upstream feature, so a busy feature's rows are
# where a sample finds them): exact counts would read every signed edge.
BUSY_FEATURES = """
SELECT up_layer || '.' || up_feature AS feature, up_layer AS layer, sum(n)::BIGINT AS edges
FROM edge_summary WHERE run_id = $run
GROUP BY up_layer, up_feature
ORDER BY edges DESC, up_layer, up_feature
LIMIT $limit
"""
BUSY_FEATURES_SAMPLED = BUSY_FEATURES.replace(
    "FROM edge_summary", "FROM edge_summary TABLESAMPLE 2% (system, 7)"
)
SUMMARY_ROWS = "SELECT count(*) FROM edge_summary"
EXACT_UP_TO_ROWS = 1_000_000


def busy_features(db: Database, run: int, limit: int = 20, limits: QueryLimits | None = None) -> pl.DataFrame:
    """Features with many out-edges over a run's prompts (sampled on big databases): starting
    points to explore."""
    big = db.fetchone(SUMMARY_ROWS)[0] > EXACT_UP_TO_ROWS
    return fetch(db, BUSY_FEATURES_SAMPLED if big else BUSY_FEATURES, {"run": run, "limit": limit}, limits)


# -- experiments -------------------------------------------------------------------------------

CURVE_POINTS = """
SELECT c.coefficient, c.down_activation, c.token_id, v.token, c.prob, c.logp
FROM curve_points c
LEFT JOIN vocab v ON v.run_id = c.run_id AND v.token_id = c.token_id
WHERE c.experiment_id = $experiment
ORDER BY c.token_id, c.coefficient
"""
VALIDATION_RESULTS = """
SELECT prompt_index, text, arm, features, total_variation, answer_token_id, answer_dprob, answer_dprob_frac
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
# percentile of its top effects' size across the noise contexts (noise_features), the same
# top-k statistic as the stored effects. Only small tables are joined, so the page stays fast.
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
SELECT c.layer || '.' || c.feature AS feature, c.layer, c.edges AS sampled_edges, c.in_context_abs_mean,
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
SELECT 'top' AS kind, up_layer || '.' || up_feature AS up, down_layer || '.' || down_feature AS down, sign,
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


# -- a prompt's graph against noise ------------------------------------------------------------

SNR_MEASURES = {
    "z": "|z| against the edge's noise (weight - noise mean) / noise std",
    "ratio": "|weight| / p95 of the feature's largest effect in noise",
    "p": "-log10 p-value against the feature's noise null (2 means p = 0.01)",
}


def longest_paths(edges: pl.DataFrame) -> pl.Series:
    """For each edge (up_layer, up_feature, down_layer, down_feature) of a graph whose edges go
    to later layers: the number of edges of the longest path through it."""
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
    """One prompt's graph as :func:`query.api.prompt_graph` prunes it, with each edge's signal
    against noise (``z_score``, ``noise_ratio``) when ``experiment`` is given.

    With ``min_snr`` > 0, edges below it (or without a noise figure) are dropped after the
    top-``k`` cut and before the path-length cut, and ``path_len`` is recomputed.
    """
    from featuregraph.query import api

    if measure not in SNR_MEASURES:
        raise ValueError(f"unknown signal-to-noise measure {measure!r}")
    filtering = experiment is not None and min_snr > 0
    graph = api.prompt_graph(db, prompt_id, run, k, 1 if filtering else min_path, min_weight, limits)
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


def console_sql(db: Database, sql: str, limits: QueryLimits | None = None) -> tuple[pl.DataFrame, bool]:
    """One read query typed by a user (a single SELECT or EXPLAIN of one, else
    :class:`featuregraph.errors.ReadOnlyError`) under ``limits``: (frame, truncated)."""
    check_read_only(db, sql)
    result = db.query(sql, None, limits)
    return pl.from_arrow(result.table), result.truncated


__all__ = [
    "DASHBOARD_LOCK_WAIT_S",
    "HISTOGRAM_SAMPLE_ROWS",
    "SNR_MEASURES",
    "DatabaseBusyError",
    "busy_features",
    "console_sql",
    "curve_points",
    "database_stamp",
    "edge_noise_histogram",
    "experiments",
    "feature_curves",
    "feature_edge_snr",
    "feature_logit_snr",
    "feature_noise",
    "feature_noise_scatter",
    "feature_sae",
    "find_prompts",
    "logit_noise_histogram",
    "recurring_edge_snr",
    "significance_by_tag",
    "longest_paths",
    "neuronpedia_url",
    "node_activations",
    "node_logits",
    "open_reader",
    "prompt",
    "prompt_edge_snr",
    "prompt_graph_snr",
    "prompt_tokens",
    "prompts_per_tag",
    "row_counts",
    "run_saes",
    "runs",
    "schema_version",
    "top_next_tokens",
    "validation_results",
    "validation_tokens",
]
