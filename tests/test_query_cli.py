"""`featuregraph query ...`, `featuregraph sql` and `featuregraph optimize`, and the guard rails."""

from __future__ import annotations

import json

import polars as pl
import pytest
from query_graphs import hand_database
from typer.testing import CliRunner

from featuregraph.cli import app
from featuregraph.errors import QueryTimeoutError
from featuregraph.store.db import QueryLimits, open_database

runner = CliRunner()


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    return hand_database(tmp_path_factory.mktemp("cli") / "hand.duckdb")


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_query_commands_print_tables(db_path):
    result = run("query", "recurring", db_path, "--edges", "3")
    assert result.exit_code == 0, result.output
    assert "0.1 -> 1.2 -> 2.3 -> 3.4" in result.output
    for args in (("prompt-graph", db_path, 2, "--k", 1, "--min-path", 3), ("neighbourhood", db_path, "1.2"),
                 ("logits", db_path, "1.2"), ("contexts", db_path, "1.2"), ("compare", db_path, 0, 1),
                 ("path-prompts", db_path, "0.1 -> 1.2 -> 2.3")):  # fmt: skip
        result = run("query", *args)
        assert result.exit_code == 0, (args, result.output)


def test_formats_and_files(db_path, tmp_path):
    result = run("query", "path-prompts", db_path, "0.1 -> 1.2 -> 2.3", "--format", "json")
    rows = json.loads(result.stdout)
    assert [r["prompt_id"] for r in rows] == [0, 2, 1, 3] and len(rows[0]["weights"]) == 2
    result = run("query", "recurring", db_path, "--edges", "2", "-f", "csv")
    header, first = result.stdout.splitlines()[:2]
    assert header.startswith("run_id,path,nodes,signs,support")
    assert '"[1, -1]",3' in first
    out = tmp_path / "graph.parquet"
    result = run("query", "prompt-graph", db_path, 2, "--format", "parquet", "--out", out)
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out).height == 6  # k=10, paths of >= 2 edges: all of prompt 2
    assert "needs --out" in run("query", "prompt-graph", db_path, 2, "--format", "parquet").output
    assert "unknown format" in run("query", "prompt-graph", db_path, 2, "--format", "xml").output


def test_errors_are_one_line(db_path, tmp_path):
    for args, message in [
        (("query", "neighbourhood", db_path, "1-2"), "unknown feature format '1-2'"),
        (("query", "prompt-graph", db_path, 42), "no prompt 42"),
        (("query", "recurring", db_path, "--edges", "9"), "n_edges must be between 2 and 6"),
        (("query", "recurring", db_path, "--signs", "+x+"), "sign pattern '+x+'"),
        (("query", "compare", tmp_path / "missing.duckdb", 0, 1), "no database at"),
    ]:
        result = run(*args)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


def test_sql_runs_reads_and_macros(db_path):
    result = run("sql", db_path, "SELECT path, support FROM recurring_paths(n_edges := 3)", "-f", "json")
    assert json.loads(result.stdout) == [{"path": "0.1 -> 1.2 -> 2.3 -> 3.4", "support": 2}]
    result = run("sql", db_path, "EXPLAIN SELECT count(*) FROM edges")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("DELETE FROM edges", "DELETE"),
        ("INSERT INTO vocab VALUES (1, 9, 'x')", "INSERT"),
        ("CREATE TABLE t (x INTEGER)", "CREATE"),
        ("DROP TABLE edges", "DROP"),
        ("COPY edges TO '/tmp/featuregraph-should-not-exist.csv'", "COPY"),
        ("ATTACH ':memory:' AS other", "ATTACH"),
        ("SET threads = 1", "SET"),
        ("EXPLAIN ANALYZE DELETE FROM edges", "EXPLAIN of DELETE"),
        ("SELECT 1; DELETE FROM edges", None),
    ],
)
def test_sql_refuses_writes(db_path, sql, kind):
    result = run("sql", db_path, sql)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert (kind in lines[0]) if kind else "one statement at a time" in lines[0]
    with open_database(db_path, read_only=True) as db:
        assert db.fetchone("SELECT count(*) FROM edges")[0] == 17


def test_row_cap_and_time_limit(db_path):
    result = run("sql", db_path, "SELECT * FROM range(100) t(i)", "--max-rows", "7", "-f", "csv")
    assert result.stdout.splitlines() == ["i"] + [str(i) for i in range(7)]
    assert "first 7 rows of 100 (stopped at the row cap" in result.stderr
    with open_database(db_path, read_only=True) as db:
        capped = db.query("SELECT * FROM range(100) t(i)", limits=QueryLimits(max_rows=100))
        assert capped.table.num_rows == 100 and not capped.truncated
        with pytest.raises(QueryTimeoutError, match="time limit of 0.2 s"):
            db.query("SELECT count(*) FROM range(100000000000) a", limits=QueryLimits(time_limit_s=0.2))
        assert db.query("SELECT 42 AS x").table.to_pylist() == [{"x": 42}]  # the connection still works
    result = run("sql", db_path, "SELECT count(*) FROM range(100000000000) a", "--time-limit", "0.2")
    assert result.exit_code == 2 and "time limit" in result.output


def test_a_cut_result_says_how_many_rows_exist(db_path):
    every = json.loads(run("query", "recurring", db_path, "--edges", "2", "-f", "json").stdout)
    assert len(every) > 2
    result = run("query", "recurring", db_path, "--edges", "2", "-f", "json", "--max-rows", "2")
    assert [r["path"] for r in json.loads(result.stdout)] == [r["path"] for r in every[:2]]
    assert result.stderr.splitlines() == [
        f"first 2 rows of {len(every)} (stopped at the row cap; raise --max-rows to see more)"
    ]
    result = run("query", "recurring", db_path, "--edges", "2", "-f", "json", "--max-rows", str(len(every)))
    assert result.stderr == ""  # exactly the cap: complete, nothing to say
    # too slow to count in time: it says that more exist
    result = run(
        "sql", db_path, "SELECT * FROM range(100000000000) t(i)", "--max-rows", "3", "--time-limit", "1"
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "first 3 rows; more exist (stopped at the row cap; raise --max-rows to see more)"
    ]


def test_query_commands_follow_the_helper_table(db_path):
    from featuregraph.query.helpers import HELPERS

    listing = run("query", "--help").output
    for helper in HELPERS.values():
        assert helper.command in listing
        text = run("query", helper.command, "--help").output
        for param in helper.params:
            if param.flag is not None:
                assert param.flag in text, (helper.command, param.flag)
    # a default taken from the table: --k 10 keeps every edge of prompt 2, --k 1 fewer
    default = json.loads(run("query", "prompt-graph", db_path, 2, "-f", "json").stdout)
    assert HELPERS["prompt-graph"].param("k").default == 10
    assert default == json.loads(run("query", "prompt-graph", db_path, 2, "--k", "10", "-f", "json").stdout)
    assert len(json.loads(run("query", "prompt-graph", db_path, 2, "--k", "1", "-f", "json").stdout)) < len(
        default
    )


def test_optimize_command(tmp_path):
    path = hand_database(tmp_path / "opt.duckdb")
    before = run("query", "recurring", path, "--edges", "2", "-f", "json").stdout
    result = run("optimize", path)
    assert result.exit_code == 0, result.output
    assert "optimized" in result.output
    assert run("query", "recurring", path, "--edges", "2", "-f", "json").stdout == before
    with open_database(path, read_only=True) as db:
        assert db.fetchone("SELECT count(*) FROM edge_occurrences WHERE n_sorted IS NULL")[0] == 0
        assert db.fetchall("SELECT prompt_id FROM edges")[:3] == [(0,), (0,), (0,)]
