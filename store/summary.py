"""The per-edge summary (``edge_summary``) and the recurring-edge index (``edge_occurrences``).

Both are derived from ``edges`` (migrations/0002_edge_summary.sql describes them):

- ``edge_summary``: one row per signed edge of a run, with ``n`` (prompts it occurs in with
  that sign), the sum and the sum of squares of its weight, and the first prompt it occurs in;
- ``edge_occurrences``: every occurrence of a signed edge with ``n >= 2``.

Beside each occurrence they keep the largest |weight| of its ablation (same run, prompt and
upstream feature; migrations/0010_path_strength.sql), which the path macros' relative-weight
filter compares with. All edges of an ablation land in the same transaction, so the new edges
alone give it.

:func:`update_summary` folds newly written prompts into both and is called by
:func:`store.runs.write_prompt_results` inside its transaction, so they are never behind
``edges``. Its cost is one lookup of the transaction's signed edges in ``edge_summary`` (a
scan of its key columns: about a second per transaction at 30M summary rows on 2 cores), so
large databases want large commit groups. New occurrences are appended unsorted (``n_sorted`` NULL); :func:`rebuild_summary`
derives both tables from ``edges`` from scratch, sorted for the query layer (bulk loads and
``featuregraph optimize`` use it).
"""

from __future__ import annotations

import pyarrow as pa

from featuregraph.store.db import Database

_KEYS = ("run_id", "up_layer", "up_feature", "down_layer", "down_feature", "sign")
_ON = " AND ".join(f"s.{k} = g.{k}" for k in _KEYS)  # fixed column names, not input

# The new prompts' edges, signed. Their prompt ids arrive as a registered Arrow table.
STAGE_NEW_EDGES = """
CREATE OR REPLACE TEMP TABLE __fg_new_edges AS
SELECT e.run_id, e.prompt_id, e.up_layer, e.up_feature, e.down_layer, e.down_feature,
       fg_sign(e.weight) AS sign, e.weight,
       max(abs(e.weight)) OVER (PARTITION BY e.prompt_id, e.up_layer, e.up_feature) AS ablation_max_abs
FROM edges e
WHERE e.run_id = $run_id AND e.prompt_id IN (SELECT prompt_id FROM __fg_new_prompts)
"""

# The new edges aggregated per signed edge, next to what the summary held before.
STAGE_NEW_SUMMARY = f"""
CREATE OR REPLACE TEMP TABLE __fg_new_summary AS
SELECT g.*, coalesce(s.n, 0) AS old_n, s.first_prompt_id AS old_first_prompt_id,
       s.sum_weight AS old_sum_weight, s.first_ablation_max_abs AS old_first_ablation_max_abs,
       s.rowid AS summary_row
FROM (
    SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign,
           count(*)::INTEGER AS n, sum(weight::DOUBLE) AS sum_weight,
           sum(weight::DOUBLE * weight::DOUBLE) AS sum_sq_weight, min(prompt_id) AS first_prompt_id,
           arg_min(ablation_max_abs, prompt_id) AS first_ablation_max_abs
    FROM __fg_new_edges
    GROUP BY run_id, up_layer, up_feature, down_layer, down_feature, sign
) g
LEFT JOIN edge_summary s ON {_ON}
"""

# An edge seen once before and again now: its first occurrence joins edge_occurrences.
BACKFILL_OCCURRENCES = """
INSERT INTO edge_occurrences
    (run_id, n_sorted, up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight,
     ablation_max_abs)
SELECT run_id, NULL, up_layer, up_feature, down_layer, down_feature, sign, old_first_prompt_id,
       CAST(old_sum_weight AS REAL), old_first_ablation_max_abs
FROM __fg_new_summary
WHERE old_n = 1
"""

APPEND_OCCURRENCES = f"""
INSERT INTO edge_occurrences
    (run_id, n_sorted, up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight,
     ablation_max_abs)
SELECT g.run_id, NULL, g.up_layer, g.up_feature, g.down_layer, g.down_feature, g.sign, g.prompt_id, g.weight,
       g.ablation_max_abs
FROM __fg_new_edges g
JOIN __fg_new_summary s ON {_ON}
WHERE s.old_n + s.n >= 2
"""

# Known edges are updated in place by row id (the lookup above already found them); a MERGE
# would look every key up in edge_summary a second time.
UPDATE_SUMMARY = """
UPDATE edge_summary SET
    n = edge_summary.n + g.n,
    sum_weight = edge_summary.sum_weight + g.sum_weight,
    sum_sq_weight = edge_summary.sum_sq_weight + g.sum_sq_weight,
    first_prompt_id = least(edge_summary.first_prompt_id, g.first_prompt_id),
    first_ablation_max_abs = CASE WHEN g.first_prompt_id < edge_summary.first_prompt_id
                                  THEN g.first_ablation_max_abs ELSE edge_summary.first_ablation_max_abs END
FROM __fg_new_summary g
WHERE edge_summary.rowid = g.summary_row
"""

INSERT_SUMMARY = """
INSERT INTO edge_summary
    (run_id, up_layer, up_feature, down_layer, down_feature, sign, n, sum_weight, sum_sq_weight,
     first_prompt_id, n_sorted, first_ablation_max_abs)
SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign, n, sum_weight, sum_sq_weight,
       first_prompt_id, NULL, first_ablation_max_abs
FROM __fg_new_summary
WHERE summary_row IS NULL
"""

DROP_STAGING = """
DROP TABLE IF EXISTS __fg_new_edges;
DROP TABLE IF EXISTS __fg_new_summary;
"""

# From scratch, for one run or (run_id NULL) all of them; the statements of migration 0002, with
# the ablation maxima of migration 0010.
DELETE_SUMMARY = "DELETE FROM edge_summary WHERE $run_id IS NULL OR run_id = $run_id"
DELETE_OCCURRENCES = "DELETE FROM edge_occurrences WHERE $run_id IS NULL OR run_id = $run_id"
SIGNED_EDGES = """
SELECT *, fg_sign(weight) AS sign,
       max(abs(weight)) OVER (PARTITION BY run_id, prompt_id, up_layer, up_feature) AS ablation_max_abs
FROM edges
WHERE $run_id IS NULL OR run_id = $run_id
"""
BUILD_SUMMARY = f"""
INSERT INTO edge_summary
    (run_id, up_layer, up_feature, down_layer, down_feature, sign, n, sum_weight, sum_sq_weight,
     first_prompt_id, n_sorted, first_ablation_max_abs)
SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign,
       count(*), sum(weight::DOUBLE), sum(weight::DOUBLE * weight::DOUBLE), min(prompt_id),
       CASE WHEN count(*) >= 2 THEN count(*) END, arg_min(ablation_max_abs, prompt_id)
FROM ({SIGNED_EDGES})
GROUP BY run_id, up_layer, up_feature, down_layer, down_feature, sign
ORDER BY run_id, up_layer, up_feature, down_layer, down_feature, sign
"""
BUILD_OCCURRENCES = f"""
INSERT INTO edge_occurrences
    (run_id, n_sorted, up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight,
     ablation_max_abs)
SELECT e.run_id, s.n_sorted, e.up_layer, e.up_feature, e.down_layer, e.down_feature, s.sign,
       e.prompt_id, e.weight, e.ablation_max_abs
FROM ({SIGNED_EDGES}) e
JOIN edge_summary s
    ON s.run_id = e.run_id AND s.up_layer = e.up_layer AND s.up_feature = e.up_feature
   AND s.down_layer = e.down_layer AND s.down_feature = e.down_feature
   AND s.sign = e.sign AND s.n >= 2
ORDER BY e.run_id, s.n_sorted DESC, e.up_layer, e.up_feature, e.down_layer, e.down_feature, s.sign,
         e.prompt_id
"""

_PROMPTS_VIEW = "__fg_new_prompts"


def update_summary(db: Database, run_id: int, prompt_ids: list[int]) -> None:
    """Fold the edges of ``prompt_ids`` (just written, not yet summarised) into the summary.

    Call it inside the transaction that wrote them, once per prompt: a prompt folded in
    twice would be counted twice.
    """
    if not prompt_ids:
        return
    db.con.register(_PROMPTS_VIEW, pa.table({"prompt_id": pa.array(prompt_ids, pa.int32())}))
    try:
        db.execute(STAGE_NEW_EDGES, {"run_id": run_id})
        db.execute(STAGE_NEW_SUMMARY)
        db.execute(BACKFILL_OCCURRENCES)
        db.execute(APPEND_OCCURRENCES)
        db.execute(UPDATE_SUMMARY)
        db.execute(INSERT_SUMMARY)
        db.execute(DROP_STAGING)
    finally:
        db.con.unregister(_PROMPTS_VIEW)


def rebuild_summary(db: Database, run_id: int | None = None) -> None:
    """Derive ``edge_summary`` and ``edge_occurrences`` from ``edges`` (one run, or all), sorted."""
    params = {"run_id": run_id}
    with db.transaction():
        db.execute(DELETE_OCCURRENCES, params)
        db.execute(DELETE_SUMMARY, params)
        db.execute(BUILD_SUMMARY, params)
        db.execute(BUILD_OCCURRENCES, params)


__all__ = ["update_summary", "rebuild_summary"]
