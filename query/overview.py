"""What a database holds: its runs and their SAEs, rows per table, prompts per tag, experiments.

Every function takes an open :class:`store.db.Database` and returns a polars frame (or a small
Python value), binding every value as a parameter.
"""

from __future__ import annotations

import polars as pl

from featuregraph.query.api import fetch
from featuregraph.store.db import Database, QueryLimits
from featuregraph.store.info import count_rows

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
    """Rows per table of the schema: the tables `featuregraph info` counts (store.info.COUNTED_TABLES)."""
    counts = list(count_rows(db).items())
    return pl.DataFrame(counts, schema={"table": pl.String, "rows": pl.Int64}, orient="row")


def prompts_per_tag(db: Database, run: int | None = None, limits: QueryLimits | None = None) -> pl.DataFrame:
    """Prompts, tokens and ablations per run and tag."""
    return fetch(db, PROMPTS_PER_TAG, {"run": run}, limits)


def experiments(
    db: Database, run: int | None = None, kind: str | None = None, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """Experiments (noise, validation, curve) of a run, newest first; spec and summary as JSON text."""
    return fetch(db, EXPERIMENTS, {"run": run, "kind": kind}, limits)


__all__ = [
    "experiments",
    "prompts_per_tag",
    "row_counts",
    "run_saes",
    "runs",
    "schema_version",
]
