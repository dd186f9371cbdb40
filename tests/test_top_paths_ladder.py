"""recurring_paths(top := N) when several steps of its threshold ladder run (migration 0016: the
candidates and their occurrences are read once per call and each step filters them), against
brute force; and the building blocks of 0011 redefined on the shared relations (fg_chains_at,
fg_chain_bound) against brute force at a fixed threshold.

Which steps run is decided by an independent model of the ladder documented in docs/sql.md
(``ladder`` below: plain Python over the graph), so each case is known to take the path it is
meant to test.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from brute_paths import expected_chains, sign, top_chains
from helpers import all_rows, graph_database_before
from test_top_paths import RANDOM, check_rows, database, relative_strong

import featuregraph.query.api as api
from featuregraph.store.db import open_database, open_sandbox


def edge_supports(graph) -> dict[tuple, int]:
    """Signed edge -> the prompts it occurs in (edge_summary.n)."""
    n: dict[tuple, int] = defaultdict(int)
    for _, edges in graph.values():
        for e in edges:
            n[(*e[:4], sign(e[4]))] += 1
    return n


def chain_bound(graph, n_edges: int, threshold: int) -> int:
    """Chains of n_edges signed edges with n >= threshold, ignoring prompts (fg_chain_bound)."""
    edges = [k for k, v in edge_supports(graph).items() if v >= threshold]
    ways: dict[tuple, int] = defaultdict(int)
    for e in edges:
        ways[e[2:4]] += 1
    for _ in range(n_edges - 1):
        nxt: dict[tuple, int] = defaultdict(int)
        for e in edges:
            nxt[e[2:4]] += ways[e[:2]]
        ways = nxt
    return sum(ways.values())


def ladder(graph, n_edges: int, min_support: int, top: int, strong=lambda p, e: True) -> list[int]:
    """The thresholds at which the search runs: from the largest edge support down by a factor
    >= 2 per step to min_support in at most 6 steps, a step skipped while fewer than ``top``
    chains of its edges exist, stopping once ``top`` chains reach the threshold."""
    floor = max(min_support, 2)
    upper = max(max(edge_supports(graph).values()), floor)
    factor = max(2.0, (upper / floor) ** (1 / 6))
    steps = [max(floor, math.floor(upper / factor**k)) for k in range(1, 6)] + [floor]
    ran = []
    for k, t in enumerate(steps):
        if k > 0 and steps[k - 1] <= floor:
            break
        if t <= floor or chain_bound(graph, n_edges, t) >= top:
            ran.append(t)
            if len(expected_chains(graph, n_edges, t, strong)) >= top:
                break
    return ran


@pytest.fixture(scope="module")
def random_db(tmp_path_factory):
    with open_database(
        database(tmp_path_factory.mktemp("ladder") / "r.duckdb", RANDOM), read_only=True
    ) as db:
        yield db


@pytest.mark.parametrize("n_edges,top,min_rel", [(2, 5, 0.0), (3, 200, 0.0), (4, 37, 0.0), (3, 60, 0.3)])
def test_several_steps_equal_brute_force(random_db, n_edges, top, min_rel):
    strong = relative_strong(RANDOM, min_rel=min_rel)
    steps = ladder(RANDOM, n_edges, 2, top, strong)
    assert len(steps) >= 2, steps  # the case runs more than one step of the ladder
    want = expected_chains(RANDOM, n_edges, 2, strong)
    frame = api.recurring_paths(random_db, n_edges, 2, top=top, min_rel_weight=min_rel)
    check_rows(frame, want, top_chains(want, top))


def test_the_model_sees_three_steps_somewhere():
    assert max(len(ladder(RANDOM, n, 2, top)) for n, top in ((3, 200), (4, 37))) >= 3


@pytest.mark.parametrize("n_edges,threshold", [(2, 3), (3, 2), (3, 4), (4, 3)])
def test_building_blocks_at_a_threshold(random_db, n_edges, threshold):
    want = expected_chains(RANDOM, n_edges, threshold)
    rows = random_db.fetchall(
        "SELECT layers, features, signs, support, support_any FROM "
        "fg_chains_at($t, $n, NULL, NULL, NULL, NULL, 0, NULL, 0, NULL, NULL)",
        {"t": threshold, "n": n_edges},
    )
    got = {(tuple(r[0]), tuple(r[1]), tuple(r[2])): (r[3], r[4]) for r in rows}
    assert got == {c: (w["support"], w["support_any"]) for c, w in want.items()}
    bound = random_db.fetchone(
        "SELECT chains FROM fg_chain_bound($t, $n, NULL, NULL, NULL, NULL)", {"t": threshold, "n": n_edges}
    )[0]
    assert bound == chain_bound(RANDOM, n_edges, threshold)


def test_the_sandbox_runs_the_search(tmp_path):
    """The dashboard and `featuregraph sql` open the database in the SQL sandbox; query_table()
    over the macro's own CTEs works there."""
    path = database(tmp_path / "s.duckdb", RANDOM)
    want = expected_chains(RANDOM, 3, 2)
    with open_sandbox(path) as db:
        check_rows(api.recurring_paths(db, 3, 2, top=12), want, top_chains(want, 12))


def test_migration_0016_upgrades_a_database_at_0015(tmp_path):
    """A database built at migration 0015 (RANDOM's first 12 prompts, summary derived by the store's
    own statements) is upgraded: its rows are unchanged and the new search answers as brute force."""
    graph = {p: RANDOM[p] for p in range(12)}
    path = tmp_path / "old.duckdb"
    con = graph_database_before(path, 16, graph)
    before = all_rows(con)
    con.close()
    with open_database(path) as db:
        assert db.fetchone("SELECT max(version) FROM schema_migrations")[0] >= 16
        after = all_rows(db)
        assert {t: after[t] for t in before} == before  # later migrations may add tables
        want = expected_chains(graph, 2, 2)
        check_rows(api.recurring_paths(db, 2, 2, top=7), want, top_chains(want, 7))
