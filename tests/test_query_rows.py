"""A result cut at the row cap says so: the Python API, through the helper table."""

from __future__ import annotations

import pytest
from query_graphs import hand_database

from featuregraph.query import api, rows
from featuregraph.query.helpers import HELPERS, helper
from featuregraph.query.rows import Truncation, capture, fetch_rows, with_cut
from featuregraph.store.db import QueryLimits, open_database


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    return hand_database(tmp_path_factory.mktemp("rows") / "hand.duckdb")


def test_a_cut_helper_result_counts_its_rows(db_path):
    # prompt 2 of the hand graph has 6 edges, every one on a path of >= 2 edges
    graph = helper("prompt-graph")
    with open_database(db_path, read_only=True) as db:
        cut = graph.run(db, QueryLimits(max_rows=4), prompt=2)
        whole = graph.run(db, QueryLimits(max_rows=6), prompt=2)
        free = graph.run(db, None, prompt=2)
    assert cut.frame.height == 4 and cut.truncated
    assert cut.truncation == Truncation(4, 6) and cut.truncation.message() == "first 4 rows of 6"
    assert not whole.truncated and whole.frame.height == 6  # exactly at the cap: complete
    assert not free.truncated and free.frame.equals(whole.frame)
    assert cut.frame.equals(free.frame.head(4))


def test_cuts_reach_every_open_capture(db_path):
    limits = QueryLimits(max_rows=1)
    with open_database(db_path, read_only=True) as db:
        with capture() as outer:
            with capture() as inner:
                api.prompt_graph(db, 2, limits=limits)
            api.feature_edges(db, "1.2", limits=limits)
            frame, cut = with_cut(api.recurring_paths, db, n_edges=2, limits=limits)
        assert with_cut(api.recurring_paths, db, n_edges=2)[1] is None
    assert inner == [Truncation(1, 6)]
    assert frame.height == 1 and cut.shown == 1 and cut.total > 1
    assert len(outer) == 3 and outer[0] == inner[0] and outer[2] == cut


def test_too_slow_to_count_says_more_exist(db_path, monkeypatch):
    monkeypatch.setattr(rows, "COUNT_TIME_LIMIT_S", 0.2)
    with open_database(db_path, read_only=True) as db:
        got = fetch_rows(db, "SELECT * FROM range(100000000000) t(i)", limits=QueryLimits(max_rows=3))
        assert got.frame["i"].to_list() == [0, 1, 2]
        assert got.truncation == Truncation(3, None)
        assert db.query("SELECT 1 AS x").table.to_pylist() == [{"x": 1}]  # the connection still works
    assert got.truncation.message() == "first 3 rows; more exist"
    assert Truncation(1, 5).message() == "first 1 row of 5"
    assert Truncation(10_000, 52_311).message() == "first 10,000 rows of 52,311"


def test_the_table_points_at_real_api_parameters():
    import inspect

    for h in HELPERS.values():
        accepted = inspect.signature(h.fn).parameters
        for p in h.params:
            assert p.name in accepted, (h.command, p.name)
            # a positional CLI argument is one the function needs (defaults may differ: the CLI
            # shows 50 recurring paths where the function returns them all)
            assert p.required == (accepted[p.name].default is inspect.Parameter.empty), (h.command, p.name)
