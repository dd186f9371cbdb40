"""The pair index of recurring paths (``chain_pairs_base``, ``chain_pair_floors``; migration 0017).

For each run, every 2-chain (signed edges a -> b and b -> c meeting at node b) that occurs in
at least ``floor`` prompts of the summary base, with one row per such prompt. recurring_paths
reads it instead of every occurrence of every candidate edge when the support asked for is at
least ``floor`` plus the run's prompts in the delta (the migration says why that is exact).

It is derived from ``edge_summary_base`` / ``edge_occurrences_base`` and rebuilt with them in
the same transaction (:func:`rebuild_pairs`, called by ``store.summary`` after a rebuild and
after every compaction), so it never describes other prompts than the base.

The floor. Counting 2-chains costs a join of the occurrences of the edges with ``n >= s``
with themselves, grouped by pair; at low ``s`` on dense data there are far more 2-chains
than edges. So the count starts at ``s0 = max(2, ceil(FLOOR_FRACTION x base prompts))`` (0.1%
of the prompts: the lowest support the benchmarks ask for), and the floor is then raised until
the rows kept fit ``BUDGET_FRACTION x`` the run's edge rows (at least ``MIN_BUDGET_ROWS``).
Below the floor, searches fall back to the full level-wise search, which on dense data (where
the budget binds) the ladder of recurring_paths rarely needs: there, many chains reach high
supports.
"""

from __future__ import annotations

import math

from featuregraph.store.db import Database

FLOOR_FRACTION = 0.001
BUDGET_FRACTION = 0.05
MIN_BUDGET_ROWS = 200_000
# The 2-chain count groups about as many rows as the occurrences' self-join yields; it runs in
# parts by the middle node so that one part's hash table stays well inside DuckDB's memory.
OCCURRENCES_PER_PART = 8_000_000

DELETE_PAIRS = "DELETE FROM chain_pairs_base WHERE run_id = $run_id"
DELETE_FLOOR = "DELETE FROM chain_pair_floors WHERE run_id = $run_id"
DELETE_ALL_PAIRS = "DELETE FROM chain_pairs_base"
DELETE_ALL_FLOORS = "DELETE FROM chain_pair_floors"
BASE_PROMPTS = "SELECT count(*) FROM prompts WHERE run_id = $run_id"  # the run's delta is empty here
EDGE_ROWS = "SELECT coalesce(sum(n), 0) FROM edge_summary_base WHERE run_id = $run_id"
RUNS_IN_BASE = "SELECT DISTINCT run_id FROM edge_summary_base ORDER BY run_id"

# The edges that can be on a 2-chain in >= s0 prompts, numbered, and their occurrences.
STAGE_EDGES = """
CREATE OR REPLACE TEMP TABLE __fg_pair_edges AS
SELECT row_number() OVER () AS eid, up_layer, up_feature, down_layer, down_feature, sign, n
FROM edge_summary_base WHERE run_id = $run_id AND n >= $s0
"""
# Their occurrences: one per prompt each edge occurs in.
OCCURRENCE_ROWS = "SELECT coalesce(sum(n), 0) FROM __fg_pair_edges"
STAGE_OCCURRENCES = """
CREATE OR REPLACE TEMP TABLE __fg_pair_occ AS
SELECT o.prompt_id, e.eid, o.up_layer, o.up_feature, o.down_layer, o.down_feature, o.sign, o.weight,
       o.ablation_max_abs, hash(o.up_layer, o.up_feature) % $parts AS up_part,
       hash(o.down_layer, o.down_feature) % $parts AS down_part
FROM edge_occurrences_base o
JOIN __fg_pair_edges e
  ON e.up_layer = o.up_layer AND e.up_feature = o.up_feature AND e.down_layer = o.down_layer
 AND e.down_feature = o.down_feature AND e.sign = o.sign
WHERE o.run_id = $run_id
"""
CREATE_COUNTS = "CREATE OR REPLACE TEMP TABLE __fg_pair_counts (ab BIGINT, bc BIGINT, n INTEGER)"
# One part of the middle nodes: the 2-chains through them in >= s0 prompts.
COUNT_PART = """
INSERT INTO __fg_pair_counts
SELECT x.eid, y.eid, count(*)
FROM __fg_pair_occ x
JOIN __fg_pair_occ y
  ON y.prompt_id = x.prompt_id AND y.up_layer = x.down_layer AND y.up_feature = x.down_feature
WHERE x.down_part = $part AND y.up_part = $part
GROUP BY x.eid, y.eid
HAVING count(*) >= $s0
"""
# The lowest floor >= s0 whose 2-chains' rows fit the budget.
CHOOSE_FLOOR = """
WITH per_n AS (SELECT n, sum(n) AS rows_at FROM __fg_pair_counts GROUP BY n),
cumulative AS (SELECT n, sum(rows_at) OVER (ORDER BY n DESC) AS rows_ge FROM per_n)
SELECT greatest($s0, coalesce((SELECT max(n) FROM cumulative WHERE rows_ge > $budget) + 1, $s0))
"""
INSERT_PAIRS = """
INSERT INTO chain_pairs_base
SELECT $run_id, c.n, x.up_layer, x.up_feature, x.down_layer, x.down_feature, y.down_layer, y.down_feature,
       x.sign, y.sign, x.prompt_id, x.weight, y.weight, x.ablation_max_abs, y.ablation_max_abs
FROM __fg_pair_counts c
JOIN __fg_pair_occ x ON x.eid = c.ab
JOIN __fg_pair_occ y ON y.eid = c.bc AND y.prompt_id = x.prompt_id
WHERE c.n >= $floor
ORDER BY c.n DESC, x.up_layer, x.up_feature, x.down_layer, x.down_feature, y.down_layer, y.down_feature,
         x.sign, y.sign, x.prompt_id
"""
INSERT_FLOOR = """
INSERT INTO chain_pair_floors (run_id, floor, pairs, pair_rows, base_prompts, built_at)
SELECT $run_id, $floor, count(*), coalesce(sum(n), 0), $base_prompts, now()
FROM __fg_pair_counts WHERE n >= $floor
"""
DROP_STAGING = (
    "DROP TABLE IF EXISTS __fg_pair_counts",
    "DROP TABLE IF EXISTS __fg_pair_occ",
    "DROP TABLE IF EXISTS __fg_pair_edges",
)


def start_floor(base_prompts: int) -> int:
    """The support the 2-chain count starts at for a run with ``base_prompts`` prompts."""
    return max(2, math.ceil(FLOOR_FRACTION * base_prompts))


def rebuild_pairs(db: Database, run_id: int) -> int:
    """Rebuild ``run_id``'s pair index from the summary base; returns its floor. Call it inside
    the transaction that changed the base (its delta rows folded or emptied)."""
    params = {"run_id": run_id}
    db.execute(DELETE_PAIRS, params)
    db.execute(DELETE_FLOOR, params)
    base_prompts = int(db.fetchone(BASE_PROMPTS, params)[0])
    s0 = start_floor(base_prompts)
    budget = max(MIN_BUDGET_ROWS, int(BUDGET_FRACTION * int(db.fetchone(EDGE_ROWS, params)[0])))
    try:
        db.execute(STAGE_EDGES, {**params, "s0": s0})
        rows = int(db.fetchone(OCCURRENCE_ROWS)[0])
        parts = max(1, math.ceil(rows / OCCURRENCES_PER_PART))  # by a hash of the middle node
        db.execute(STAGE_OCCURRENCES, {**params, "parts": parts})
        db.execute(CREATE_COUNTS)
        for part in range(parts):
            db.execute(COUNT_PART, {"part": part, "s0": s0})
        floor = int(db.fetchone(CHOOSE_FLOOR, {"s0": s0, "budget": budget})[0])
        db.execute(INSERT_PAIRS, {**params, "floor": floor})
        db.execute(INSERT_FLOOR, {**params, "floor": floor, "base_prompts": base_prompts})
    finally:
        for sql in DROP_STAGING:
            db.execute(sql)
    return floor


def rebuild_all_pairs(db: Database, run_ids: list[int] | None = None) -> dict[int, int]:
    """Rebuild the pair index of ``run_ids`` (default: every run in the base); floors by run."""
    if run_ids is None:
        db.execute(DELETE_ALL_PAIRS)
        db.execute(DELETE_ALL_FLOORS)
        run_ids = [int(r[0]) for r in db.fetchall(RUNS_IN_BASE)]
    return {run_id: rebuild_pairs(db, run_id) for run_id in run_ids}


__all__ = ["BUDGET_FRACTION", "FLOOR_FRACTION", "rebuild_all_pairs", "rebuild_pairs", "start_floor"]
