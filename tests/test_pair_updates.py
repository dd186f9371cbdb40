"""A compaction updates the pair index (store/chain_pairs.py, update_pairs; migration 0018)
rather than counting it again: after every compaction its rows are brute force's at its floor,
whether the floor rose with the prompts, was raised to keep the update cheap, or was counted
again in full."""

from __future__ import annotations

from collections import defaultdict

import pytest
from brute_paths import expected_chains, top_chains
from query_graphs import new_run
from test_chain_pairs import pair_occurrences, write
from test_top_paths import LAYERS, RANDOM, check_rows

import featuregraph.query.api as api
from featuregraph.store import chain_pairs
from featuregraph.store.db import open_database
from featuregraph.store.summary import COMPACT_ROWS_ENV, fold_delta

# Groups of prompts written and compacted in turn: single prompts among them (2-chains the
# delta sees once), and enough prompts overall that a floor of 15% of them rises from 2 to 5.
GROUPS = [range(0, 6), range(6, 9), range(9, 10), range(10, 16), range(16, 17), range(17, 24), range(24, 30)]
FLOORS = "SELECT floor, full_floor, pairs, pair_rows, base_prompts FROM chain_pair_floors WHERE run_id = $run"
ROWS = """
SELECT n, a_layer, a_feature, b_layer, b_feature, c_layer, c_feature, ab_sign, bc_sign, prompt_id,
       ab_weight, bc_weight
FROM chain_pairs_base WHERE run_id = $run
"""


def check_index(db, run: int, graph: dict) -> tuple[int, int]:
    """The run's index holds exactly brute force's 2-chains at its floor; returns (floor, full_floor)."""
    floor, full_floor, pairs, pair_rows, base_prompts = db.fetchone(FLOORS, {"run": run})
    want = {k: v for k, v in pair_occurrences(graph).items() if len(v) >= floor}
    got: dict[tuple, dict[int, tuple]] = defaultdict(dict)
    for n, *key, p, wa, wb in db.fetchall(ROWS, {"run": run}):
        assert n == len(want.get(tuple(key), ())), key
        got[tuple(key)][p] = (wa, wb)
    assert got == want
    assert (pairs, pair_rows, base_prompts) == (len(want), sum(len(v) for v in want.values()), len(graph))
    return floor, full_floor


@pytest.fixture
def counted(monkeypatch):
    """Full counts of the pair index, by run, as they happen."""
    calls: list[int] = []
    rebuild = chain_pairs.rebuild_pairs

    def spy(db, run_id):
        calls.append(run_id)
        return rebuild(db, run_id)

    monkeypatch.setattr(chain_pairs, "rebuild_pairs", spy)
    monkeypatch.setenv(COMPACT_ROWS_ENV, "0")
    monkeypatch.setattr(chain_pairs, "FLOOR_FRACTION", 0.15)
    return calls


def test_updates_follow_the_natural_floor_and_never_count_again(tmp_path, counted):
    """With room to count every 2-chain the delta may lift, each compaction after the first keeps
    the floor at max(old floor, 15% of the prompts), and only the first counts in full."""
    with open_database(tmp_path / "u.duckdb") as db:
        run = new_run(db, layers=range(LAYERS))
        seen: dict = {}
        floors = []
        for group in GROUPS:
            write(db, run, RANDOM, group)
            seen.update({p: RANDOM[p] for p in group})
            fold_delta(db)
            floor, full_floor = check_index(db, run, seen)
            assert floor == max(floors[-1] if floors else 0, chain_pairs.start_floor(len(seen)))
            assert full_floor == 2
            floors.append(floor)
        assert counted == [run]
        assert floors[0] == 2 and floors[-1] == 5
        for n_edges, t in ((2, floors[-1]), (2, floors[-1] + 2), (3, floors[-1])):
            want = expected_chains(RANDOM, n_edges, t)
            assert want
            check_rows(api.recurring_paths(db, n_edges, t, top=40), want, top_chains(want, 40))


def test_a_floor_raised_to_keep_updates_cheap_stays_exact(tmp_path, counted, monkeypatch):
    """Counting no occurrence at all: an update raises the floor past every 2-chain outside the
    index that the delta could lift, within DRIFT_FRACTION of the last full count's floor (here
    up to twice it, so that small floors can drift at all), and counts in full beyond that. Either
    way the index is brute force's at the floor it records."""
    monkeypatch.setattr(chain_pairs, "UPDATE_COUNT_BUDGET", 0)
    monkeypatch.setattr(chain_pairs, "DRIFT_FRACTION", 1.0)
    monkeypatch.setattr(chain_pairs, "MIN_BUDGET_ROWS", 300)  # a size budget that binds at times
    monkeypatch.setattr(chain_pairs, "BUDGET_FRACTION", 0.0)
    with open_database(tmp_path / "r.duckdb") as db:
        run = new_run(db, layers=range(LAYERS))
        seen: dict = {}
        updated = raised = 0
        for group in GROUPS:
            before = len(counted)
            write(db, run, RANDOM, group)
            seen.update({p: RANDOM[p] for p in group})
            fold_delta(db)
            floor, full_floor = check_index(db, run, seen)
            natural = chain_pairs.start_floor(len(seen))
            if len(counted) == before:  # updated, not counted
                updated += 1
                assert floor <= max(natural, 2 * full_floor)
                raised += floor > natural
            else:
                assert full_floor == floor
        assert updated >= 2 and raised >= 1 and len(counted) >= 2
        want = expected_chains(RANDOM, 2, floor)
        assert want
        check_rows(api.recurring_paths(db, 2, floor, top=40), want, top_chains(want, 40))
