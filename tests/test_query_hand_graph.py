"""The SQL helpers on a hand-built graph whose answers are worked out in the comments.

See tests/query_graphs.py for the graph (HAND_GRAPH, then LATER_PROMPTS).
"""

from __future__ import annotations

import math

import polars as pl
import pytest
from query_graphs import HAND_GRAPH, LATER_PROMPTS, hand_database, new_run, prompt_result, write_graph

import featuregraph.query.api as api
from featuregraph.errors import DatabaseError, FeaturegraphError, InputError, NotFoundError
from featuregraph.store.db import open_database
from featuregraph.store.optimize import optimize
from featuregraph.store.runs import write_prompt_results
from featuregraph.store.summary import rebuild_summary


@pytest.fixture(scope="module")
def hand_db(tmp_path_factory):
    path = hand_database(tmp_path_factory.mktemp("hand") / "hand.duckdb")
    with open_database(path, read_only=True) as db:
        yield db


def paths(frame: pl.DataFrame) -> list[tuple[str, list[int], int]]:
    return [(r["path"], r["signs"], r["support"]) for r in frame.iter_rows(named=True)]


def approx(values, expected, tol=1e-6):
    return len(values) == len(expected) and all(
        math.isclose(a, b, abs_tol=tol) for a, b in zip(values, expected, strict=True)
    )


def same_paths(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    return paths(a) == paths(b) and all(
        approx(x, y) for x, y in zip(a["mean_weights"].to_list(), b["mean_weights"].to_list(), strict=True)
    )


# -- recurring paths -----------------------------------------------------------------------


def test_recurring_two_edge_paths_and_their_support(hand_db):
    # 0.1->1.2->2.3 (+-) in prompts 0, 1, 3; 0.1->1.5->2.6 (++) in 0, 2; 1.2->2.3->3.4 (-+) in 0, 1.
    # (0.1->1.2->2.3 (++) and 1.2->2.3->3.4 (++) are in prompt 2 only; 1.5->2.6->3.7 likewise.)
    frame = api.recurring_paths(hand_db, n_edges=2, min_support=2)
    assert paths(frame) == [
        ("0.1 -> 1.2 -> 2.3", [1, -1], 3),
        ("0.1 -> 1.5 -> 2.6", [1, 1], 2),
        ("1.2 -> 2.3 -> 3.4", [-1, 1], 2),
    ]
    first = frame.row(0, named=True)
    assert (
        first["nodes"] == ["0.1", "1.2", "2.3"]
        and first["features"] == [1, 2, 3]
        and first["start_layer"] == 0
    )
    assert approx(first["mean_weights"], [(0.5 + 0.6 + 0.2) / 3, (-0.4 - 0.2 - 0.5) / 3])


def test_recurring_three_edge_path(hand_db):
    # The whole chain 0.1->1.2->2.3->3.4 with signs + - + is in prompts 0 and 1 (prompt 2 has + + +).
    frame = api.recurring_paths(hand_db, n_edges=3, min_support=2)
    assert paths(frame) == [("0.1 -> 1.2 -> 2.3 -> 3.4", [1, -1, 1], 2)]
    assert approx(frame["mean_weights"][0].to_list(), [0.55, -0.3, 0.2])
    assert api.recurring_paths(hand_db, n_edges=3, min_support=3).height == 0
    assert api.recurring_paths(hand_db, n_edges=4, min_support=2).height == 0


def test_recurring_filters(hand_db):
    # Signs: + + only fits 0.1->1.5->2.6; * + also fits 1.2->2.3->3.4.
    assert [p for p, *_ in paths(api.recurring_paths(hand_db, 2, 2, signs="++"))] == ["0.1 -> 1.5 -> 2.6"]
    assert [p for p, *_ in paths(api.recurring_paths(hand_db, 2, 2, signs=[0, 1]))] == [
        "0.1 -> 1.5 -> 2.6",
        "1.2 -> 2.3 -> 3.4",
    ]
    # |weight| >= 0.15 drops 0.1->1.5 in prompt 0 and 2.3->3.4 in prompt 1: only the first path
    # keeps two prompts (0, 1, 3 all have both edges >= 0.15).
    assert paths(api.recurring_paths(hand_db, 2, 2, min_weight=0.15)) == [("0.1 -> 1.2 -> 2.3", [1, -1], 3)]
    # Tag a = prompts 0 and 1.
    assert paths(api.recurring_paths(hand_db, 2, 2, tag="a")) == [
        ("0.1 -> 1.2 -> 2.3", [1, -1], 2),
        ("1.2 -> 2.3 -> 3.4", [-1, 1], 2),
    ]
    # Layers: starting at 1 or later; ending at 2 or earlier.
    assert [p for p, *_ in paths(api.recurring_paths(hand_db, 2, 2, min_layer=1))] == ["1.2 -> 2.3 -> 3.4"]
    assert [p for p, *_ in paths(api.recurring_paths(hand_db, 2, 2, max_layer=2))] == [
        "0.1 -> 1.2 -> 2.3",
        "0.1 -> 1.5 -> 2.6",
    ]
    assert api.recurring_paths(hand_db, 2, 2, limit=1).height == 1


def test_recurring_paths_per_run(tmp_path):
    path = hand_database(tmp_path / "two_runs.duckdb")
    with open_database(path) as db:
        run2 = new_run(db, key="second")
        write_graph(db, run2, {p: HAND_GRAPH[p] for p in (0, 1)})
        both = api.recurring_paths(db, n_edges=3, min_support=2)
        assert sorted(both["run_id"].to_list()) == [1, 2]
        only2 = api.recurring_paths(db, n_edges=3, min_support=2, run=run2)
        assert paths(only2) == [("0.1 -> 1.2 -> 2.3 -> 3.4", [1, -1, 1], 2)] and only2[
            "run_id"
        ].to_list() == [2]


def test_recurring_paths_stay_exact_across_optimize_and_later_ingests(tmp_path):
    path = hand_database(tmp_path / "grow.duckdb")
    with open_database(path) as db:
        before = api.recurring_paths(db, 2, 2)
        optimize(db)
        assert same_paths(api.recurring_paths(db, 2, 2), before)
        # Two more prompts with the 3-edge chain: 0.1->1.2 (+) was in 4 prompts at the optimize,
        # 1.2->2.3 (-) and 2.3->3.4 (+) in 3: asking for 4 prompts now reads rows sorted at the
        # optimize (>= 4), rows written since, and rows of edges that grew past 4 since.
        write_graph(db, 1, LATER_PROMPTS)
        three = api.recurring_paths(db, 3, 4)
        assert paths(three) == [("0.1 -> 1.2 -> 2.3 -> 3.4", [1, -1, 1], 4)]
        assert approx(three["mean_weights"][0].to_list(), [0.45, -0.375, 0.375])
        two = api.recurring_paths(db, 2, 2)
        assert paths(two) == [
            ("0.1 -> 1.2 -> 2.3", [1, -1], 5),
            ("1.2 -> 2.3 -> 3.4", [-1, 1], 4),
            ("0.1 -> 1.5 -> 2.6", [1, 1], 2),
            ("1.5 -> 2.6 -> 3.7", [1, -1], 2),  # 2.6->3.7 was a single-prompt edge until prompt 4
        ]
        optimize(db)
        assert same_paths(api.recurring_paths(db, 2, 2), two)


# -- prompts containing a path ---------------------------------------------------------------


def test_path_prompts_lists_prompts_with_weights(hand_db):
    frame = api.path_prompts(hand_db, "0.1 -> 1.2 -> 2.3 -> 3.4")
    rows = {r["prompt_id"]: r["weights"] for r in frame.iter_rows(named=True)}
    assert sorted(rows) == [0, 1, 2]
    assert approx(rows[2], [0.7, 0.3, 0.2])
    assert frame["prompt_id"].to_list() == [0, 2, 1]  # by smallest |weight| on the path, largest first
    assert api.path_prompts(hand_db, "0.1 -> 1.2 -> 2.3 -> 3.4", signs="+-+")[
        "prompt_id"
    ].sort().to_list() == [0, 1]
    assert api.path_prompts(hand_db, ["0.1", "1.2", "2.3"], tag="b")["prompt_id"].to_list() == [2, 3]
    assert api.path_prompts(hand_db, "0.1,1.2,2.3", min_weight=0.3)["prompt_id"].to_list() == [0, 2]
    # 2.6 -> 3.7 occurs once (it lives in edge_summary only): still found.
    assert api.path_prompts(hand_db, "1.5 -> 2.6 -> 3.7")["prompt_id"].to_list() == [2]


def test_path_prompts_after_optimize_and_more_prompts(tmp_path):
    path = hand_database(tmp_path / "paths.duckdb")
    with open_database(path) as db:
        optimize(db)
        write_graph(db, 1, LATER_PROMPTS)
        frame = api.path_prompts(db, "1.5 -> 2.6 -> 3.7")
        assert frame["prompt_id"].to_list() == [4, 2]
        assert approx(frame["weights"][0].to_list(), [0.3, -0.2])
        assert api.path_prompts(db, "0.1 -> 1.2 -> 2.3 -> 3.4", signs="+-+")[
            "prompt_id"
        ].sort().to_list() == [0, 1, 4, 5]


# -- one prompt's graph --------------------------------------------------------------------


def edges_of(frame: pl.DataFrame) -> set[tuple[str, str, int]]:
    return {(r["up"], r["down"], r["path_len"]) for r in frame.iter_rows(named=True)}


def test_prompt_graph_top_k_then_long_paths(hand_db):
    # Prompt 2. Top-1 per upstream feature drops 0.1->1.5 (0.2 < 0.7); then paths of >= 3 edges
    # keep only 0.1->1.2->2.3->3.4 (1.5->2.6->3.7 is 2 edges long).
    assert edges_of(api.prompt_graph(hand_db, 2, k=1, min_path=3)) == {
        ("0.1", "1.2", 3), ("1.2", "2.3", 3), ("2.3", "3.4", 3),
    }  # fmt: skip
    assert edges_of(api.prompt_graph(hand_db, 2, k=1, min_path=2)) == {
        ("0.1", "1.2", 3), ("1.2", "2.3", 3), ("2.3", "3.4", 3), ("1.5", "2.6", 2), ("2.6", "3.7", 2),
    }  # fmt: skip
    # With both edges of 0.1 kept, 0.1->1.5->2.6->3.7 is 3 edges long too.
    assert len(edges_of(api.prompt_graph(hand_db, 2, k=2, min_path=3))) == 6
    # |weight| >= 0.25 first: 0.1->1.2 (0.7), 1.2->2.3 (0.3), 1.5->2.6 (0.4) are left.
    assert edges_of(api.prompt_graph(hand_db, 2, k=10, min_path=1, min_weight=0.25)) == {
        ("0.1", "1.2", 2), ("1.2", "2.3", 2), ("1.5", "2.6", 1),
    }  # fmt: skip
    ranks = api.prompt_graph(hand_db, 0, k=10, min_path=1).filter(pl.col("up") == "0.1")
    assert ranks.select("down", "edge_rank").rows() == [("1.2", 1), ("1.5", 2)]


# -- two prompts side by side ----------------------------------------------------------------


def test_compare_prompts(hand_db):
    frame = api.compare_prompts(hand_db, 0, 2)
    status = {(r["up"], r["down"]): (r["status"], r["same_sign"]) for r in frame.iter_rows(named=True)}
    assert status == {
        ("0.1", "1.2"): ("shared", True), ("1.2", "2.3"): ("shared", False), ("2.3", "3.4"): ("shared", True),
        ("0.1", "1.5"): ("shared", True), ("1.5", "2.6"): ("shared", True), ("2.6", "3.7"): ("only_b", None),
    }  # fmt: skip
    counts = api.compare_prompts(hand_db, 0, 1)["status"].value_counts().sort("status").rows()
    assert counts == [("only_a", 2), ("shared", 3)]


# -- a feature's neighbourhood ---------------------------------------------------------------


def test_feature_edges_counts_means_spread_and_sign_consistency(hand_db):
    frame = api.feature_edges(hand_db, "1.2")
    rows = {r["direction"]: r for r in frame.iter_rows(named=True)}
    out, inn = rows["out"], rows["in"]
    # 1.2 -> 2.3 weighs -0.4, -0.2, +0.3, -0.5 in prompts 0..3.
    assert (out["neighbour"], out["n"], out["n_pos"], out["n_neg"]) == ("2.3", 4, 1, 3)
    assert math.isclose(out["mean_weight"], -0.2, abs_tol=1e-6)
    assert math.isclose(out["std_weight"], math.sqrt(0.38 / 3), abs_tol=1e-6)
    assert math.isclose(out["sign_consistency"], 0.75)
    # 0.1 -> 1.2 weighs 0.5, 0.6, 0.7, 0.2.
    assert (inn["neighbour"], inn["n"], inn["n_pos"], inn["sign_consistency"]) == ("0.1", 4, 4, 1.0)
    assert math.isclose(inn["mean_weight"], 0.5, abs_tol=1e-6)
    assert math.isclose(inn["std_weight"], math.sqrt(0.14 / 3), abs_tol=1e-6)
    # 0.1 has two out-neighbours: 1.2 (4 prompts) before 1.5 (2); top=1 keeps the first.
    assert api.feature_edges(hand_db, "0.1")["neighbour"].to_list() == ["1.2", "1.5"]
    assert api.feature_edges(hand_db, "0.1", top=1)["neighbour"].to_list() == ["1.2"]
    # min_count counts both signs: 1.2 -> 2.3 has 3 negative and 1 positive prompts.
    assert api.feature_edges(hand_db, "1.2", min_count=4)["neighbour"].to_list() == ["2.3", "0.1"]
    assert api.feature_edges(hand_db, "0.1", min_count=3)["neighbour"].to_list() == ["1.2"]


def test_edge_stats_view_matches_the_raw_edges(hand_db):
    got = {
        (r[0], r[1], r[2]): (r[3], r[4], r[5])
        for r in hand_db.fetchall("SELECT up, down, sign, n, mean_weight, std_weight FROM edge_stats")
    }
    assert got[("1.2", "2.3", -1)][0] == 3 and math.isclose(
        got[("1.2", "2.3", -1)][1], -1.1 / 3, abs_tol=1e-6
    )
    assert got[("1.2", "2.3", 1)] == (1, pytest.approx(0.3), None)
    assert len(got) == 7


@pytest.fixture(scope="module")
def feature_db(tmp_path_factory):
    """Feature 1.2 ablated in prompts 0 and 1 (logit effects) and active in prompts 0-2."""
    path = tmp_path_factory.mktemp("feature") / "feature.duckdb"
    with open_database(path) as db:
        run = new_run(db)
        write_prompt_results(db, run, [
            prompt_result(0, [(1, 2, 2, 3, -0.4)], tokens=["<bos>", "A", "(", "C"],
                          activations=[(1, 1, 2, 0.5), (1, 2, 2, 0.9), (1, 2, 4, 2.0)],
                          logits=[(1, 2, 3, 0.4, 0.02), (1, 2, 5, -0.2, -0.01)]),
            prompt_result(1, [(1, 2, 2, 3, -0.2)], tokens=["<bos>", "B"],
                          activations=[(1, 1, 2, 1.5)],
                          logits=[(1, 2, 3, 0.2, 0.01), (1, 2, 6, -0.6, -0.03)]),
            prompt_result(2, [(0, 1, 1, 2, 0.1)], tokens=["<bos>", "x", "y"], activations=[(1, 2, 2, 0.1)]),
        ])  # fmt: skip
    with open_database(path, read_only=True) as db:
        yield db


def test_feature_logits_averages_over_ablations(feature_db):
    frame = api.feature_logits(feature_db, "1.2")
    rows = [
        (r["direction"], r["token_rank"], r["token"], r["n_prompts"], r["n_ablations"])
        for r in frame.iter_rows(named=True)
    ]
    # token 3: dprob 0.02 and 0.01 over 2 ablations; token 6: -0.03 in one of 2; token 5: -0.01 in one.
    assert rows == [("promoted", 1, "t3", 2, 2), ("suppressed", 1, "t6", 1, 2), ("suppressed", 2, "t5", 1, 2)]
    assert approx(frame["mean_dprob"].to_list(), [0.015, -0.015, -0.005])
    assert approx(frame["mean_dlogp"].to_list(), [0.3, -0.3, -0.1])
    assert api.feature_logits(feature_db, "1.2", top=1).height == 2


def test_neighbourhood_bundles_edges_and_logits(feature_db):
    nb = api.neighbourhood(feature_db, "1.2")
    assert nb.edges["neighbour"].to_list() == ["2.3", "0.1"]
    assert nb.logits.height == 3


def test_top_contexts(feature_db):
    frame = api.top_contexts(feature_db, "1.2", top=2)
    assert frame.select("context_rank", "prompt_id", "max_activation", "max_position").rows() == [
        (1, 1, 1.5, 1), (2, 0, pytest.approx(0.9), 2),
    ]  # fmt: skip
    second = frame.row(1, named=True)
    assert second["tokens"] == ["<bos>", "A", "(", "C"]
    assert approx(second["token_activations"], [0.0, 0.5, 0.9, 0.0])
    assert second["text"] == "A ( C"


# -- the summary tables --------------------------------------------------------------------


SUMMARY = """
SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign, n, first_prompt_id, sum_weight, sum_sq_weight
FROM edge_summary ORDER BY ALL
"""
OCCURRENCES = """
SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight
FROM edge_occurrences ORDER BY ALL
"""


def test_incremental_summary_equals_a_rebuild(tmp_path):
    path = hand_database(tmp_path / "inc.duckdb")  # written two prompts per transaction
    with open_database(path) as db:
        write_graph(db, 1, LATER_PROMPTS, group=1)
        incremental = (db.fetchall(SUMMARY), db.fetchall(OCCURRENCES))
        rebuild_summary(db)
        rebuilt = (db.fetchall(SUMMARY), db.fetchall(OCCURRENCES))
    assert [r[:8] for r in incremental[0]] == [r[:8] for r in rebuilt[0]]
    for a, b in zip(incremental[0], rebuilt[0], strict=True):
        assert a[8:] == pytest.approx(b[8:], abs=1e-6)
    assert incremental[1] == rebuilt[1]
    # 7 signed edges of HAND_GRAPH, none new in LATER_PROMPTS; occurrences of the n >= 2 ones.
    assert len(rebuilt[0]) == 7
    assert len(rebuilt[1]) == sum(len(e) for _, e in {**HAND_GRAPH, **LATER_PROMPTS}.values()) - 1


# -- errors --------------------------------------------------------------------------------


# (call, error class, what the one-line message must say): each names the bad value or the rule.
ONE_LINE_ERRORS = [
    (lambda db: api.feature_edges(db, "1x2"), InputError, "unknown feature format '1x2'"),
    (lambda db: api.prompt_graph(db, 99), NotFoundError, "no prompt 99"),
    (lambda db: api.recurring_paths(db, run=9), NotFoundError, "no run 9"),
    (lambda db: api.feature_logits(db, "9.1"), NotFoundError, "no SAE at layer 9"),
    (lambda db: api.top_contexts(db, "1.10"), NotFoundError, "out of range"),
    (lambda db: api.recurring_paths(db, n_edges=7), InputError, "n_edges must be between 2 and 6"),
    (lambda db: api.recurring_paths(db, min_support=1), InputError, "min_support must be >= 2"),
    (lambda db: api.recurring_paths(db, n_edges=3, signs="+-"), InputError, "has 2 entries for 3 edges"),
    (lambda db: api.path_prompts(db, "0.1"), InputError, "a path has 2 to 7 features"),
]


def test_one_line_errors(hand_db):
    for call, kind, says in ONE_LINE_ERRORS:
        with pytest.raises(FeaturegraphError) as err:
            call(hand_db)
        message = str(err.value)
        assert type(err.value) is kind, (says, type(err.value))
        assert says in message, (says, message)
        # one line, as the CLI prints it: no newline, no traceback text, nothing blank
        assert "\n" not in message and message.strip() == message and message, repr(message)
        assert "Traceback" not in message and len(message) < 300, message


def test_macros_check_their_input_in_plain_sql(hand_db):
    with pytest.raises(DatabaseError, match="not a feature name of the form LAYER.FEATURE") as err:
        hand_db.fetchall("SELECT * FROM feature_edges('1x2')")
    assert "\n" not in str(err.value)
    with pytest.raises(DatabaseError, match="n_edges must be between 2 and 6"):
        hand_db.fetchall("SELECT * FROM recurring_paths(n_edges := 9)")
