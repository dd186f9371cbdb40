"""The pair index of recurring paths (``chain_pairs_base``, ``chain_pair_floors``; migration 0017).

For each run, every 2-chain (signed edges a -> b and b -> c meeting at node b) that occurs in
at least ``floor`` prompts of the summary base, with one row per such prompt. recurring_paths
reads it instead of every occurrence of every candidate edge when the support asked for is at
least ``floor`` plus the run's prompts in the delta (the migration says why that is exact).

It is derived from ``edge_summary_base`` / ``edge_occurrences_base`` and changes with them in
the same transaction (:func:`rebuild_pairs` after a rebuild of the base, :func:`update_pairs`
after a compaction; both called by ``store.summary``), so it never describes other prompts
than the base.

The floor. Counting 2-chains costs a join of the occurrences of the edges with ``n >= s``
with themselves, grouped by pair; at low ``s`` on dense data there are far more 2-chains
than edges. So the count starts at ``s0 = max(2, ceil(FLOOR_FRACTION x base prompts))`` (0.1%
of the prompts: the lowest support the benchmarks ask for), and the floor is then raised until
the rows kept fit ``BUDGET_FRACTION x`` the run's edge rows (at least ``MIN_BUDGET_ROWS``).
Below the floor, searches fall back to the full level-wise search, which on dense data (where
the budget binds) the ladder of recurring_paths rarely needs: there, many chains reach high
supports.

A compaction updates the index instead of counting again (:func:`update_pairs`; the full count
costs 40-66 s at 500 M edges however small the delta). The delta's prompts are new to the
base, so an indexed 2-chain's count grows by its count in the delta, and a 2-chain outside the
index (fewer than ``floor`` base prompts) can only reach the new floor if the delta lifts it
there: its *reach*, the delta count plus the least of ``floor - 1`` and its edges' base counts,
bounds its new count. Only those whose reach is at least the new floor are counted over the
base. Where that would read more than ``UPDATE_COUNT_BUDGET`` occurrences, the new floor is
raised until it does not (the 2-chains that could reach it get fewer), within
``DRIFT_FRACTION`` of the floor the last full count chose; past that, the count is redone.
"""

from __future__ import annotations

import logging
import math

from featuregraph.store.db import Database

log = logging.getLogger(__name__)

FLOOR_FRACTION = 0.001
BUDGET_FRACTION = 0.05
MIN_BUDGET_ROWS = 200_000
# The 2-chain count groups about as many rows as the occurrences' self-join yields; it runs in
# parts by the middle node so that one part's hash table stays well inside DuckDB's memory.
OCCURRENCES_PER_PART = 8_000_000
# An update counts at most about this many occurrences of the 2-chains the delta may lift past
# the floor, raising the floor rather than counting more...
UPDATE_COUNT_BUDGET = 20_000_000
# ... up to this fraction above the floor of the last full count (``chain_pair_floors.full_floor``,
# or the natural floor if higher); further than that, a full count (a floor that drifts up
# makes searches below it fall back to the full search).
DRIFT_FRACTION = 0.25

DELETE_PAIRS = "DELETE FROM chain_pairs_base WHERE run_id = $run_id"
DELETE_FLOOR = "DELETE FROM chain_pair_floors WHERE run_id = $run_id"
DELETE_ALL_PAIRS = "DELETE FROM chain_pairs_base"
DELETE_ALL_FLOORS = "DELETE FROM chain_pair_floors"
BASE_PROMPTS = "SELECT count(*) FROM prompts WHERE run_id = $run_id"  # all in the base when called
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
INSERT INTO chain_pair_floors (run_id, floor, pairs, pair_rows, base_prompts, built_at, full_floor)
SELECT $run_id, $floor, count(*), coalesce(sum(n), 0), $base_prompts, now(), $full_floor
FROM __fg_pair_counts WHERE n >= $floor
"""

# -- The update after a compaction: the base already holds the delta's prompts, edge_delta still
# lists them. Its edges among the staged ones (n >= the floor asked for, over the new base).
OLD_FLOOR = "SELECT floor, coalesce(full_floor, floor) FROM chain_pair_floors WHERE run_id = $run_id"
STAGE_DELTA_OCCURRENCES = """
CREATE OR REPLACE TEMP TABLE __fg_pair_docc AS
SELECT d.prompt_id, e.eid, d.up_layer, d.up_feature, d.down_layer, d.down_feature
FROM edge_delta d
JOIN __fg_pair_edges e
  ON e.up_layer = d.up_layer AND e.up_feature = d.up_feature AND e.down_layer = d.down_layer
 AND e.down_feature = d.down_feature AND e.sign = d.sign
WHERE d.run_id = $run_id
"""
# The delta's 2-chains among them, with their delta counts nd.
STAGE_DELTA_PAIRS = """
CREATE OR REPLACE TEMP TABLE __fg_pair_dcounts AS
SELECT x.eid AS ab, y.eid AS bc, count(*) AS nd
FROM __fg_pair_docc x
JOIN __fg_pair_docc y
  ON y.prompt_id = x.prompt_id AND y.up_layer = x.down_layer AND y.up_feature = x.down_feature
GROUP BY x.eid, y.eid
"""
# The indexed 2-chains whose edges are still staged, with their count in the old base.
STAGE_OLD_PAIRS = """
CREATE OR REPLACE TEMP TABLE __fg_pair_old AS
SELECT x.eid AS ab, y.eid AS bc, any_value(p.n) AS n_old
FROM chain_pairs_base p
JOIN __fg_pair_edges x
  ON x.up_layer = p.a_layer AND x.up_feature = p.a_feature AND x.down_layer = p.b_layer
 AND x.down_feature = p.b_feature AND x.sign = p.ab_sign
JOIN __fg_pair_edges y
  ON y.up_layer = p.b_layer AND y.up_feature = p.b_feature AND y.down_layer = p.c_layer
 AND y.down_feature = p.c_feature AND y.sign = p.bc_sign
WHERE p.run_id = $run_id
GROUP BY x.eid, y.eid
"""
# The delta's 2-chains outside the index that could reach $at_least: reach bounds the new count
# (the old one is below $old_floor and at most either edge's old count); cost, the occurrences
# an exact count of it would read.
STAGE_CANDIDATES = """
CREATE OR REPLACE TEMP TABLE __fg_pair_cand AS
WITH edge_nd AS (SELECT eid, count(*) AS nd FROM __fg_pair_docc GROUP BY eid)
SELECT d.ab, d.bc,
       d.nd + least($old_floor - 1, x.n - xd.nd, y.n - yd.nd) AS reach,
       least(x.n, y.n) AS cost
FROM __fg_pair_dcounts d
JOIN __fg_pair_edges x ON x.eid = d.ab
JOIN __fg_pair_edges y ON y.eid = d.bc
JOIN edge_nd xd ON xd.eid = d.ab
JOIN edge_nd yd ON yd.eid = d.bc
ANTI JOIN __fg_pair_old o ON o.ab = d.ab AND o.bc = d.bc
WHERE d.nd + least($old_floor - 1, x.n - xd.nd, y.n - yd.nd) >= $at_least
"""
# The lowest floor >= $at_least at which counting the candidates that can reach it reads at
# most $budget occurrences.
CHOOSE_UPDATE_FLOOR = """
WITH per_reach AS (SELECT reach, sum(cost) AS cost FROM __fg_pair_cand GROUP BY reach),
cumulative AS (SELECT reach, sum(cost) OVER (ORDER BY reach DESC) AS cost_ge FROM per_reach)
SELECT greatest($at_least, coalesce((SELECT max(reach) FROM cumulative WHERE cost_ge > $budget) + 1, $at_least))
"""
# Only the edges of the 2-chains kept or counted need their occurrences staged.
KEEP_NEEDED_EDGES = """
DELETE FROM __fg_pair_edges WHERE eid NOT IN (
    SELECT ab FROM __fg_pair_old UNION SELECT bc FROM __fg_pair_old
    UNION SELECT ab FROM __fg_pair_cand WHERE reach >= $target
    UNION SELECT bc FROM __fg_pair_cand WHERE reach >= $target
)
"""
COUNT_OLD_PAIRS = """
INSERT INTO __fg_pair_counts
SELECT o.ab, o.bc, o.n_old + coalesce(d.nd, 0)
FROM __fg_pair_old o
LEFT JOIN __fg_pair_dcounts d ON d.ab = o.ab AND d.bc = o.bc
WHERE o.n_old + coalesce(d.nd, 0) >= $target
"""
COUNT_CANDIDATES = """
INSERT INTO __fg_pair_counts
SELECT c.ab, c.bc, count(*)
FROM __fg_pair_cand c
JOIN __fg_pair_occ x ON x.eid = c.ab
JOIN __fg_pair_occ y ON y.eid = c.bc AND y.prompt_id = x.prompt_id
WHERE c.reach >= $target
GROUP BY c.ab, c.bc
HAVING count(*) >= $target
"""
DROP_STAGING = (
    "DROP TABLE IF EXISTS __fg_pair_counts",
    "DROP TABLE IF EXISTS __fg_pair_occ",
    "DROP TABLE IF EXISTS __fg_pair_edges",
    "DROP TABLE IF EXISTS __fg_pair_docc",
    "DROP TABLE IF EXISTS __fg_pair_dcounts",
    "DROP TABLE IF EXISTS __fg_pair_old",
    "DROP TABLE IF EXISTS __fg_pair_cand",
)


def start_floor(base_prompts: int) -> int:
    """The support the 2-chain count starts at for a run with ``base_prompts`` prompts."""
    return max(2, math.ceil(FLOOR_FRACTION * base_prompts))


def _row_budget(db: Database, params: dict) -> int:
    """The most rows the run's index may hold (module docstring: the floor)."""
    return max(MIN_BUDGET_ROWS, int(BUDGET_FRACTION * int(db.fetchone(EDGE_ROWS, params)[0])))


def _write_index(db: Database, params: dict, s0: int, base_prompts: int, full_floor: int | None) -> int:
    """Replace the run's index by the staged counts from the floor that fits its row budget
    (at least ``s0``) up; returns that floor. ``full_floor`` None: this is a full count."""
    floor = int(db.fetchone(CHOOSE_FLOOR, {"s0": s0, "budget": _row_budget(db, params)})[0])
    db.execute(DELETE_PAIRS, params)
    db.execute(DELETE_FLOOR, params)
    db.execute(INSERT_PAIRS, {**params, "floor": floor})
    values = {
        "floor": floor,
        "base_prompts": base_prompts,
        "full_floor": floor if full_floor is None else full_floor,
    }
    db.execute(INSERT_FLOOR, {**params, **values})
    return floor


def _drop_staging(db: Database) -> None:
    for sql in DROP_STAGING:
        db.execute(sql)


def rebuild_pairs(db: Database, run_id: int) -> int:
    """Rebuild ``run_id``'s pair index from the summary base; returns its floor. Call it inside
    the transaction that changed the base (its delta rows folded or emptied)."""
    params = {"run_id": run_id}
    base_prompts = int(db.fetchone(BASE_PROMPTS, params)[0])
    s0 = start_floor(base_prompts)
    try:
        db.execute(STAGE_EDGES, {**params, "s0": s0})
        rows = int(db.fetchone(OCCURRENCE_ROWS)[0])
        parts = max(1, math.ceil(rows / OCCURRENCES_PER_PART))  # by a hash of the middle node
        db.execute(STAGE_OCCURRENCES, {**params, "parts": parts})
        db.execute(CREATE_COUNTS)
        for part in range(parts):
            db.execute(COUNT_PART, {"part": part, "s0": s0})
        return _write_index(db, params, s0, base_prompts, None)
    finally:
        _drop_staging(db)


def update_pairs(db: Database, run_id: int) -> int:
    """Bring ``run_id``'s pair index up to date after a compaction, from its old rows and the
    delta's 2-chains (module docstring); returns the new floor. Call it inside the compaction's
    transaction, after the base has taken the delta and before the delta is emptied. A run
    without an index yet, or whose floor would drift too far, is counted in full."""
    params = {"run_id": run_id}
    old = db.fetchone(OLD_FLOOR, params)
    if old is None or old[0] is None:
        return rebuild_pairs(db, run_id)
    old_floor, full_floor = int(old[0]), int(old[1])
    base_prompts = int(db.fetchone(BASE_PROMPTS, params)[0])
    natural = start_floor(base_prompts)
    at_least = max(old_floor, natural)
    try:
        db.execute(STAGE_EDGES, {**params, "s0": at_least})
        db.execute(STAGE_DELTA_OCCURRENCES, params)
        db.execute(STAGE_DELTA_PAIRS)
        db.execute(STAGE_OLD_PAIRS, params)
        db.execute(STAGE_CANDIDATES, {"old_floor": old_floor, "at_least": at_least})
        choose = {"at_least": at_least, "budget": UPDATE_COUNT_BUDGET}
        target = int(db.fetchone(CHOOSE_UPDATE_FLOOR, choose)[0])
        if target <= max(natural, math.floor(full_floor * (1 + DRIFT_FRACTION))):
            db.execute(KEEP_NEEDED_EDGES, {"target": target})
            db.execute(STAGE_OCCURRENCES, {**params, "parts": 1})
            db.execute(CREATE_COUNTS)
            db.execute(COUNT_OLD_PAIRS, {"target": target})
            db.execute(COUNT_CANDIDATES, {"target": target})
            return _write_index(db, params, target, base_prompts, full_floor)
    finally:
        _drop_staging(db)
    log.info("run %d: pair index floor would drift to %d; counting it again", run_id, target)
    return rebuild_pairs(db, run_id)


def update_all_pairs(db: Database, run_ids: list[int]) -> dict[int, int]:
    """:func:`update_pairs` for each of ``run_ids`` (the runs a compaction folded); floors by run."""
    return {run_id: update_pairs(db, run_id) for run_id in run_ids}


def rebuild_all_pairs(db: Database, run_ids: list[int] | None = None) -> dict[int, int]:
    """Rebuild the pair index of ``run_ids`` (default: every run in the base); floors by run."""
    if run_ids is None:
        db.execute(DELETE_ALL_PAIRS)
        db.execute(DELETE_ALL_FLOORS)
        run_ids = [int(r[0]) for r in db.fetchall(RUNS_IN_BASE)]
    return {run_id: rebuild_pairs(db, run_id) for run_id in run_ids}


__all__ = [
    "BUDGET_FRACTION", "FLOOR_FRACTION", "rebuild_all_pairs", "rebuild_pairs", "start_floor", "update_all_pairs",
    "update_pairs",
]  # fmt: skip
