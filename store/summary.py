"""The per-edge summary (``edge_summary``) and the recurring-edge index (``edge_occurrences``).

Both are derived from ``edges`` and are views (migrations/0012_edge_segments.sql) over two parts:

- the **base**, ``edge_summary_base`` (one row per signed edge of a run: ``n``, the sum and sum
  of squares of its weight, its first prompt) and ``edge_occurrences_base`` (every occurrence
  of a signed edge with ``n >= 2``), as of the last compaction;
- the **delta**, ``edge_delta``: the signed edges of every prompt written since, each with the
  largest |weight| of its ablation (same run, prompt and upstream feature).

An ingest transaction only appends its own edges to the delta (:func:`append_delta`): its cost
depends on its rows alone, never on what is stored. :func:`fold_delta` (a compaction) merges
the delta into the base in one transaction and empties it: it costs one scan of the base's key
columns, and runs when ``featuregraph optimize`` asks, or automatically once the delta holds
:func:`compact_threshold` rows, a fraction of the base (:func:`maybe_fold`): the compaction
cost per ingested row stays constant as the base grows. :func:`rebuild_summary` derives the base
from ``edges`` from scratch, sorted for the query layer, and empties the delta (bulk loads and
``featuregraph optimize``). A compaction deletes the summary rows of the edges it touched and
appends their new totals, with the new edges (``n_sorted`` NULL), as one batch sorted like the
base; occurrences it appends unsorted (``n_sorted`` NULL), as before.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa

from featuregraph.store.chain_pairs import rebuild_all_pairs, update_all_pairs
from featuregraph.store.db import Database

log = logging.getLogger(__name__)

_KEYS = ("run_id", "up_layer", "up_feature", "down_layer", "down_feature", "sign")
_ON = " AND ".join(f"s.{k} = g.{k}" for k in _KEYS)  # fixed column names, not input

COMPACT_ROWS_ENV = "FEATUREGRAPH_COMPACT_ROWS"
COMPACT_FRACTION_ENV = "FEATUREGRAPH_COMPACT_FRACTION"
# A write folds the delta into the base once it holds max(DEFAULT_COMPACT_ROWS,
# DEFAULT_COMPACT_FRACTION x the base's summary rows) rows. A fold costs one scan of the base
# plus its delta, so a threshold proportional to the base keeps the compaction cost per
# ingested row constant as the database grows (a fixed one makes it grow with the base); the
# price is a larger delta that reads aggregate on the fly (about 0.1 s per million rows on 2
# cores), at most the fraction of the base. FEATUREGRAPH_COMPACT_ROWS set: that fixed threshold.
DEFAULT_COMPACT_ROWS = 4_000_000
DEFAULT_COMPACT_FRACTION = 0.1
BASE_ROWS = "SELECT count(*) FROM edge_summary_base"

_NEW_EDGES_VIEW = "__fg_new_edges_arrow"
# A transaction's new edges, signed, with their ablation's largest |weight| (computed in numpy
# by append_delta), from the Arrow table that is being inserted into ``edges``: nothing stored
# is read back.
APPEND_DELTA = f"""
INSERT INTO edge_delta
    (run_id, prompt_id, up_layer, up_feature, down_layer, down_feature, sign, weight, ablation_max_abs)
SELECT run_id, prompt_id, up_layer, up_feature, down_layer, down_feature, fg_sign(weight), weight,
       ablation_max_abs
FROM {_NEW_EDGES_VIEW}
"""
DELTA_ROWS = "SELECT count(*) FROM edge_delta"
DELTA_RUNS = "SELECT DISTINCT run_id FROM edge_delta ORDER BY run_id"

# The delta aggregated per signed edge, next to what the base held before.
STAGE_NEW_SUMMARY = f"""
CREATE OR REPLACE TEMP TABLE __fg_new_summary AS
SELECT g.*, coalesce(s.n, 0) AS old_n, s.first_prompt_id AS old_first_prompt_id,
       s.sum_weight AS old_sum_weight, s.sum_sq_weight AS old_sum_sq_weight, s.n_sorted AS old_n_sorted,
       s.first_ablation_max_abs AS old_first_ablation_max_abs,
       s.rowid AS summary_row
FROM edge_delta_summary g
LEFT JOIN edge_summary_base s ON {_ON}
"""

# An edge seen once before and again now: its first occurrence joins edge_occurrences_base.
BACKFILL_OCCURRENCES = """
INSERT INTO edge_occurrences_base
    (run_id, n_sorted, up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight,
     ablation_max_abs)
SELECT run_id, NULL, up_layer, up_feature, down_layer, down_feature, sign, old_first_prompt_id,
       CAST(old_sum_weight AS REAL), old_first_ablation_max_abs
FROM __fg_new_summary
WHERE old_n = 1
"""

APPEND_OCCURRENCES = f"""
INSERT INTO edge_occurrences_base
    (run_id, n_sorted, up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight,
     ablation_max_abs)
SELECT g.run_id, NULL, g.up_layer, g.up_feature, g.down_layer, g.down_feature, g.sign, g.prompt_id, g.weight,
       g.ablation_max_abs
FROM edge_delta g
JOIN __fg_new_summary s ON {_ON}
WHERE s.old_n + s.n >= 2
"""

# The summary base's order: a rebuild sorts it so, and each compaction's batch (migration 0017).
SUMMARY_ORDER = "run_id, up_layer, down_layer, fg_zorder(up_feature, down_feature), sign"

# Known edges are deleted by row id (the lookup above already found them) and inserted again
# with their new totals, next to the new edges, the whole batch sorted as a rebuild sorts the
# base (each compaction leaves one more sorted run at the end of the table). An UPDATE in place
# made the next checkpoint rewrite every column segment it touched, all over the table: 25 of a
# 41 s compaction of 64 prompts at 500 M edges, against 3 s for the delete and the insert.
# n_sorted stays each edge's (it pairs summary rows with their rows in edge_occurrences_base).
DELETE_FOLDED = """
DELETE FROM edge_summary_base WHERE rowid IN (SELECT summary_row FROM __fg_new_summary WHERE summary_row IS NOT NULL)
"""

INSERT_FOLDED = f"""
INSERT INTO edge_summary_base
    (run_id, up_layer, up_feature, down_layer, down_feature, sign, n, sum_weight, sum_sq_weight,
     first_prompt_id, n_sorted, first_ablation_max_abs)
SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign, old_n + n,
       coalesce(old_sum_weight, 0) + sum_weight, coalesce(old_sum_sq_weight, 0) + sum_sq_weight,
       CASE WHEN old_first_prompt_id IS NULL OR first_prompt_id < old_first_prompt_id
            THEN first_prompt_id ELSE old_first_prompt_id END,
       old_n_sorted,
       CASE WHEN old_first_prompt_id IS NULL OR first_prompt_id < old_first_prompt_id
            THEN first_ablation_max_abs ELSE old_first_ablation_max_abs END
FROM __fg_new_summary
ORDER BY {SUMMARY_ORDER}
"""

DROP_STAGING = "DROP TABLE IF EXISTS __fg_new_summary"
EMPTY_DELTA = "DELETE FROM edge_delta WHERE $run_id IS NULL OR run_id = $run_id"

# From scratch, for one run or (run_id NULL) all of them; the statements of migration 0002, with
# the ablation maxima of migration 0010.
DELETE_SUMMARY = "DELETE FROM edge_summary_base WHERE $run_id IS NULL OR run_id = $run_id"
DELETE_OCCURRENCES = "DELETE FROM edge_occurrences_base WHERE $run_id IS NULL OR run_id = $run_id"
SIGNED_EDGES = """
SELECT *, fg_sign(weight) AS sign,
       max(abs(weight)) OVER (PARTITION BY run_id, prompt_id, up_layer, up_feature) AS ablation_max_abs
FROM edges
WHERE $run_id IS NULL OR run_id = $run_id
"""
BUILD_SUMMARY = f"""
INSERT INTO edge_summary_base
    (run_id, up_layer, up_feature, down_layer, down_feature, sign, n, sum_weight, sum_sq_weight,
     first_prompt_id, n_sorted, first_ablation_max_abs)
SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign,
       count(*), sum(weight::DOUBLE), sum(weight::DOUBLE * weight::DOUBLE), min(prompt_id),
       CASE WHEN count(*) >= 2 THEN count(*) END, arg_min(ablation_max_abs, prompt_id)
FROM ({SIGNED_EDGES})
GROUP BY run_id, up_layer, up_feature, down_layer, down_feature, sign
ORDER BY {SUMMARY_ORDER}
"""
BUILD_OCCURRENCES = f"""
INSERT INTO edge_occurrences_base
    (run_id, n_sorted, up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight,
     ablation_max_abs)
SELECT e.run_id, s.n_sorted, e.up_layer, e.up_feature, e.down_layer, e.down_feature, s.sign,
       e.prompt_id, e.weight, e.ablation_max_abs
FROM ({SIGNED_EDGES}) e
JOIN edge_summary_base s
    ON s.run_id = e.run_id AND s.up_layer = e.up_layer AND s.up_feature = e.up_feature
   AND s.down_layer = e.down_layer AND s.down_feature = e.down_feature
   AND s.sign = e.sign AND s.n >= 2
ORDER BY e.run_id, s.n_sorted DESC, e.up_layer, e.up_feature, e.down_layer, e.down_feature, s.sign,
         e.prompt_id
"""


def _ablation_max_abs(edges: pa.Table) -> np.ndarray:
    """Per row, the largest |weight| among the rows of the same (run, prompt, up layer, up feature)."""
    keys = np.stack([edges.column(c).to_numpy().astype(np.int64)
                     for c in ("run_id", "prompt_id", "up_layer", "up_feature")], axis=1)  # fmt: skip
    size = np.abs(edges.column("weight").to_numpy().astype(np.float32))
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, np.any(ordered[1:] != ordered[:-1], axis=1)])
    group_max = np.maximum.reduceat(size[order], starts)
    out = np.empty(len(size), np.float32)
    out[order] = np.repeat(group_max, np.diff(np.r_[starts, len(size)]))
    return out


def append_delta(db: Database, edges: pa.Table) -> None:
    """Append ``edges`` (rows being inserted into ``edges`` in this transaction, whole
    ablations) to the delta. Cost: these rows only. Call it once per row, in the transaction
    that writes them: an edge appended twice would be counted twice."""
    if edges.num_rows == 0:
        return
    edges = edges.append_column("ablation_max_abs", pa.array(_ablation_max_abs(edges)))
    db.con.register(_NEW_EDGES_VIEW, edges)
    try:
        db.execute(APPEND_DELTA)
    finally:
        db.con.unregister(_NEW_EDGES_VIEW)


def delta_rows(db: Database) -> int:
    """Edge rows written since the last compaction."""
    return int(db.fetchone(DELTA_ROWS)[0])


def _env_number(name: str, default: float, kind: type) -> float:
    try:
        return kind(os.environ.get(name, default))
    except ValueError:
        return default


def compact_threshold(base: int = 0) -> int:
    """Delta rows past which a write folds the delta, given the summary base's ``base`` rows:
    ``max(DEFAULT_COMPACT_ROWS, fraction x base)`` with ``fraction`` from
    ``FEATUREGRAPH_COMPACT_FRACTION`` (default 0.1); ``FEATUREGRAPH_COMPACT_ROWS`` set: that
    fixed number whatever the base (0: never)."""
    if COMPACT_ROWS_ENV in os.environ:
        return int(_env_number(COMPACT_ROWS_ENV, DEFAULT_COMPACT_ROWS, int))
    fraction = max(0.0, _env_number(COMPACT_FRACTION_ENV, DEFAULT_COMPACT_FRACTION, float))
    return max(DEFAULT_COMPACT_ROWS, int(fraction * base))


def _fold_statements(db: Database) -> None:
    runs = [int(r[0]) for r in db.fetchall(DELTA_RUNS)]
    db.execute(STAGE_NEW_SUMMARY)
    db.execute(BACKFILL_OCCURRENCES)
    db.execute(APPEND_OCCURRENCES)
    db.execute(DELETE_FOLDED)
    db.execute(INSERT_FOLDED)
    db.execute(DROP_STAGING)
    update_all_pairs(db, runs)  # reads the delta's prompts: before it is emptied
    db.execute(EMPTY_DELTA, {"run_id": None})


def fold_delta(db: Database) -> int:
    """Compaction: merge the delta into the base and empty it, in one transaction (a crash
    leaves both as they were). Returns the delta rows folded. The views read the same before
    and after."""
    rows = delta_rows(db)
    if rows:
        with db.transaction():
            _fold_statements(db)
    return rows


def base_rows(db: Database) -> int:
    """Rows of the summary base (what a compaction scans)."""
    return int(db.fetchone(BASE_ROWS)[0])


def maybe_fold(db: Database) -> int:
    """Fold the delta if it holds :func:`compact_threshold` rows or more for the current base;
    rows folded (0: none)."""
    floor = compact_threshold(0)  # the threshold is never below this: count the base only past it
    delta = delta_rows(db)
    if floor <= 0 or delta < floor or delta < compact_threshold(base_rows(db)):
        return 0
    rows = fold_delta(db)
    log.info("folded %d delta edge rows into the summary base", rows)
    return rows


def rebuild_summary(db: Database, run_id: int | None = None) -> None:
    """Derive the summary base from ``edges`` (one run, or all), sorted; empty their delta."""
    params = {"run_id": run_id}
    with db.transaction():
        db.execute(DELETE_OCCURRENCES, params)
        db.execute(DELETE_SUMMARY, params)
        db.execute(EMPTY_DELTA, params)
        db.execute(BUILD_SUMMARY, params)
        db.execute(BUILD_OCCURRENCES, params)
        rebuild_all_pairs(db, None if run_id is None else [run_id])


__all__ = [
    "append_delta", "base_rows", "compact_threshold", "delta_rows", "fold_delta", "maybe_fold",
    "rebuild_summary",
]  # fmt: skip
