"""The pair index of recurring paths (migration 0017, store/chain_pairs.py) against brute force:
its rows, its floor, and recurring_paths answered from it, with and without a delta, after a
compaction, a crash during one, and an upgrade from 0016."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import defaultdict

import pytest
from brute_paths import expected_chains, sign, top_chains
from helpers import graph_database_before
from query_graphs import new_run, prompt_result
from test_top_paths import LAYERS, RANDOM, check_rows, relative_strong

import featuregraph.query.api as api
from featuregraph.store import chain_pairs
from featuregraph.store.db import open_database
from featuregraph.store.optimize import optimize
from featuregraph.store.runs import write_prompt_results
from featuregraph.store.summary import COMPACT_ROWS_ENV, fold_delta

USABLE = "SELECT fg_pair_index_usable($t, NULL)"
FLOOR = "SELECT floor FROM chain_pair_floors WHERE run_id = $run"


def write(db, run, graph, prompts) -> None:
    write_prompt_results(db, run, [prompt_result(p, graph[p][1], graph[p][0]) for p in prompts])


def pair_occurrences(graph, prompts=None) -> dict[tuple, dict[int, tuple]]:
    """2-chain (a layer, a feature, b layer, b feature, c layer, c feature, ab sign, bc sign) ->
    prompt -> (ab weight, bc weight), by brute force over ``graph``."""
    found: dict[tuple, dict[int, tuple]] = defaultdict(dict)
    for p, (_, edges) in graph.items():
        if prompts is not None and p not in prompts:
            continue
        for x in edges:
            for y in edges:
                if (y[0], y[1]) == (x[2], x[3]):
                    key = (x[0], x[1], x[2], x[3], y[2], y[3], sign(x[4]), sign(y[4]))
                    found[key][p] = (x[4], y[4])
    return found


def brute_floor(graph, s0: int, budget: int) -> int:
    """The lowest floor >= s0 whose 2-chains' rows fit ``budget`` (store/chain_pairs.py)."""
    counts = [len(v) for v in pair_occurrences(graph).values() if len(v) >= s0]
    floor = s0
    while sum(c for c in counts if c >= floor) > budget:
        floor += 1
    return floor


@pytest.fixture(scope="module", params=["whole", "budget"])
def indexed(request, tmp_path_factory):
    """RANDOM written like an ingest and compacted: the index at its natural floor (2 on 30
    prompts) or, with a budget that binds, at a higher one. Yields (path, floor)."""
    mp = pytest.MonkeyPatch()
    if request.param == "budget":
        mp.setattr(chain_pairs, "MIN_BUDGET_ROWS", 400)
        mp.setattr(chain_pairs, "BUDGET_FRACTION", 0.0)
    path = tmp_path_factory.mktemp("pairs") / "p.duckdb"
    with open_database(path) as db:
        run = new_run(db, layers=range(LAYERS))
        write(db, run, RANDOM, sorted(RANDOM))
        fold_delta(db)
        floor = db.fetchone(FLOOR, {"run": run})[0]
    mp.undo()
    yield path, floor


def test_the_floor_follows_the_budget(indexed):
    path, floor = indexed
    budget = 400 if floor > 2 else chain_pairs.MIN_BUDGET_ROWS
    assert floor == brute_floor(RANDOM, chain_pairs.start_floor(len(RANDOM)), budget)


def test_the_index_holds_every_two_chain_at_its_floor(indexed):
    path, floor = indexed
    want = {k: v for k, v in pair_occurrences(RANDOM).items() if len(v) >= floor}
    assert want  # not vacuous
    with open_database(path, read_only=True) as db:
        rows = db.fetchall(
            "SELECT n, a_layer, a_feature, b_layer, b_feature, c_layer, c_feature, ab_sign, bc_sign, prompt_id, "
            "ab_weight, bc_weight FROM chain_pairs_base"
        )
        floors = db.fetchone("SELECT pairs, pair_rows, base_prompts FROM chain_pair_floors")
    got: dict[tuple, dict[int, tuple]] = defaultdict(dict)
    for n, *key, p, wa, wb in rows:
        assert n == len(want[tuple(key)])
        got[tuple(key)][p] = (wa, wb)
    assert got == want
    assert floors == (len(want), sum(len(v) for v in want.values()), len(RANDOM))


@pytest.mark.parametrize(
    "n_edges,min_support,top,min_rel,tag",
    [(2, 2, 5, 0.0, None), (3, 2, 60, 0.0, None), (3, 4, None, 0.0, None), (4, 3, 25, 0.0, None),
     (3, 2, 40, 0.3, None), (3, 2, 15, 0.0, "b"), (5, 2, 10, 0.0, None)],
)  # fmt: skip
def test_recurring_paths_from_the_index_equal_brute_force(indexed, n_edges, min_support, top, min_rel, tag):
    path, floor = indexed
    strong = relative_strong(RANDOM, min_rel=min_rel)
    graph = RANDOM if tag is None else {p: g for p, g in RANDOM.items() if g[0] == tag}
    want = expected_chains(graph, n_edges, min_support, strong)
    with open_database(path, read_only=True) as db:
        frame = api.recurring_paths(db, n_edges, min_support, top=top, min_rel_weight=min_rel, tag=tag)
        assert db.fetchone(USABLE, {"t": min_support})[0] == (min_support >= floor)
    check_rows(frame, want, top_chains(want, top))


def test_strength_ranking_from_the_index_equals_brute_force(indexed):
    path, floor = indexed
    want = expected_chains(RANDOM, 3, floor)
    with open_database(path, read_only=True) as db:
        frame = api.recurring_paths(db, 3, floor, top=20, rank_by="strength")
    check_rows(frame, want, top_chains(want, 20, "strength"))


@pytest.mark.parametrize("in_delta", [2, 9])
def test_with_a_delta_every_answer_is_brute_force(tmp_path, monkeypatch, in_delta):
    """Some prompts compacted, the rest in the delta: from the floor up the index answers, with
    the delta's frequent edges read in full, and every answer is brute force's."""
    monkeypatch.setenv(COMPACT_ROWS_ENV, "0")
    monkeypatch.setattr(chain_pairs, "MIN_BUDGET_ROWS", 300)  # a floor above 2, below which
    monkeypatch.setattr(chain_pairs, "BUDGET_FRACTION", 0.0)  # the full search answers
    path = tmp_path / "d.duckdb"
    ids = sorted(RANDOM)
    with open_database(path) as db:
        run = new_run(db, layers=range(LAYERS))
        write(db, run, RANDOM, ids[:-in_delta])
        fold_delta(db)
        write(db, run, RANDOM, ids[-in_delta:])
        floor = db.fetchone(FLOOR, {"run": run})[0]
        assert floor > 2
        assert db.fetchone("SELECT delta_prompts FROM fg_pair_index_reach(NULL)")[0] == in_delta
        found = 0
        for t in (floor - 1, floor, floor + 1, floor + 2):
            assert db.fetchone(USABLE, {"t": t})[0] == (t >= floor)
            for n_edges, top in ((2, 30), (3, 40), (3, None)):
                want = expected_chains(RANDOM, n_edges, t)
                found += len(want)
                check_rows(api.recurring_paths(db, n_edges, t, top=top), want, top_chains(want, top))
        assert found > 50  # not vacuous
        fold_delta(db)
        assert db.fetchone("SELECT base_prompts FROM chain_pair_floors")[0] == len(RANDOM)
        floor = db.fetchone(FLOOR, {"run": run})[0]
        want = expected_chains(RANDOM, 3, floor)
        check_rows(api.recurring_paths(db, 3, floor, top=50), want, top_chains(want, 50))


def test_a_new_run_only_in_the_delta_and_one_without_edges(tmp_path, monkeypatch):
    monkeypatch.setenv(COMPACT_ROWS_ENV, "0")
    path = tmp_path / "n.duckdb"
    ids = sorted(RANDOM)
    with open_database(path) as db:
        first = new_run(db, "first", layers=range(LAYERS))
        write(db, first, RANDOM, ids)
        fold_delta(db)
        second = new_run(db, "second", layers=range(LAYERS))
        write(db, second, RANDOM, ids[:8])
        new_run(db, "empty", layers=range(LAYERS))
        assert db.fetchone(USABLE, {"t": 2})[0]  # the second run's chains come from the delta
        for t in (2, 3):
            want = expected_chains(RANDOM, 2, t)
            check_rows(api.recurring_paths(db, 2, t, run=first, top=30), want, top_chains(want, 30))
            eight = expected_chains({p: RANDOM[p] for p in ids[:8]}, 2, t)
            assert eight
            check_rows(api.recurring_paths(db, 2, t, run=second, top=None), eight, top_chains(eight, None))
            assert api.recurring_paths(db, 2, t, top=10**6).height == len(want) + len(eight)


CRASH_DURING_FOLD = """
import os, signal, sys
from featuregraph.store.db import open_database
from featuregraph.store import summary
db = open_database(sys.argv[1])
with db.transaction():
    summary._fold_statements(db)  # the fold and the index rebuild, not yet committed
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_crash_during_compaction_keeps_index_and_base_together(tmp_path, monkeypatch):
    monkeypatch.setenv(COMPACT_ROWS_ENV, "0")
    path = tmp_path / "c.duckdb"
    ids = sorted(RANDOM)
    with open_database(path) as db:
        run = new_run(db, layers=range(LAYERS))
        write(db, run, RANDOM, ids[:20])
        fold_delta(db)
        write(db, run, RANDOM, ids[20:])
        before = db.fetchall("SELECT * FROM chain_pair_floors")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_DURING_FOLD), str(path)],
                          env={**os.environ, COMPACT_ROWS_ENV: "0"})  # fmt: skip
    assert proc.returncode == -9
    with open_database(path) as db:
        assert db.fetchall("SELECT * FROM chain_pair_floors") == before  # as before the crash
        assert db.fetchone(USABLE, {"t": 2})[0]
        for t in (2, 12):
            want = expected_chains(RANDOM, 3, t)
            check_rows(api.recurring_paths(db, 3, t, top=25), want, top_chains(want, 25))
        fold_delta(db)
        assert db.fetchone("SELECT base_prompts FROM chain_pair_floors")[0] == len(RANDOM)
        want = expected_chains(RANDOM, 3, 2)
        check_rows(api.recurring_paths(db, 3, 2, top=25), want, top_chains(want, 25))


def test_migration_0017_leaves_an_older_database_exact_until_its_next_compaction(tmp_path):
    graph = {p: RANDOM[p] for p in range(12)}
    path = tmp_path / "old.duckdb"
    con = graph_database_before(path, 17, graph)
    con.close()
    want = expected_chains(graph, 3, 2)
    with open_database(path) as db:
        assert db.fetchall("SELECT run_id, floor FROM chain_pair_floors") == [(1, None)]
        assert not db.fetchone(USABLE, {"t": 10 ** 6})[0]  # no index: the full search
        check_rows(api.recurring_paths(db, 3, 2, top=20), want, top_chains(want, 20))
        optimize(db)
        assert db.fetchone(USABLE, {"t": 2})[0]
        check_rows(api.recurring_paths(db, 3, 2, top=20), want, top_chains(want, 20))


def test_step_zero_answers_above_min_support_from_the_index(indexed):
    """min_support below the floor, top := N: when N chains reach the floor the index alone
    answers (step 0 of recurring_paths); one more and the full search does. Both are brute force."""
    path, floor = indexed
    for n_edges in (2, 3):
        want = expected_chains(RANDOM, n_edges, 2)
        at_floor = sum(1 for w in want.values() if w["support"] >= floor)
        assert at_floor >= 1
        with open_database(path, read_only=True) as db:
            for top in (1, at_floor, at_floor + 1):
                check_rows(api.recurring_paths(db, n_edges, 2, top=top), want, top_chains(want, top))
                check_rows(api.recurring_paths(db, n_edges, 2, top=top, tag="a"), *_tagged("a", n_edges, top))


def _tagged(tag, n_edges, top):
    want = expected_chains({p: g for p, g in RANDOM.items() if g[0] == tag}, n_edges, 2)
    return want, top_chains(want, top)


def test_the_summary_base_is_sorted_in_z_order_of_its_features(tmp_path):
    """fg_zorder interleaves the bits of (up_feature, down_feature); rebuild_summary sorts the
    summary base by run, layers, then that key (a feature's in- and out-edges both stay local)."""

    def interleave(a: int, b: int) -> int:
        return sum(((a >> i) & 1) << (2 * i) | ((b >> i) & 1) << (2 * i + 1) for i in range(32))

    path = tmp_path / "z.duckdb"
    with open_database(path) as db:
        pairs = [(0, 0), (1, 0), (0, 1), (3, 5), (24575, 123), (2**31 - 1, 2**31 - 1), (805306371, 1)]
        for a, b in pairs:
            assert db.fetchone("SELECT fg_zorder(CAST($a AS INTEGER), CAST($b AS INTEGER))", {"a": a, "b": b})[0] == (
                interleave(a, b)
            )
        run = new_run(db, layers=range(LAYERS))
        write(db, run, RANDOM, sorted(RANDOM))
        optimize(db)
        rows = db.fetchall("SELECT run_id, up_layer, down_layer, up_feature, down_feature, sign FROM edge_summary_base")
    keys = [(r, ul, dl, interleave(uf, df), s) for r, ul, dl, uf, df, s in rows]
    assert len(keys) > 100 and keys == sorted(keys)
