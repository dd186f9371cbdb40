"""The SQL sandbox: what a user's SQL can reach through `featuregraph sql`, the dashboard's SQL
console and the Python API (store.db.open_sandbox, query.readonly.run_sql).

Each probe tries to read, list or write a file, attach a database, change a setting or load an
extension. Through every entry point it must be refused with one line, the secret file's content
and the listed folder's names must never come back, and no file may be written. The sandbox on its
own (statements run on its connection without the one-SELECT rule) must refuse them too: the
refusal comes from DuckDB's own switches, not from looking at the statement.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from query_graphs import hand_database
from typer.testing import CliRunner

from featuregraph.cli import app
from featuregraph.dashboard.launch import exposure_warning, serve
from featuregraph.errors import DatabaseError, DatabaseLockedError, FeaturegraphError
from featuregraph.query.reader import open_reader
from featuregraph.query.readonly import console_sql, run_sql
from featuregraph.store.db import QueryLimits, open_database, open_sandbox

SECRET = "sandbox-secret-5f1c9a"
LISTED = "only-glob-would-name-this.txt"
RECURRING = "SELECT path, support FROM recurring_paths(n_edges := 3)"
RECURRING_ROWS = [{"path": "0.1 -> 1.2 -> 2.3 -> 3.4", "support": 2}]  # worked out in query_graphs.py

# {secret}: a text file holding SECRET; {parquet}: a Parquet file holding it; {folder}: where both
# live, with LISTED beside them; {other}: another DuckDB database holding it; {out}: a path that
# must still not exist afterwards (a file, a folder for EXPORT, a log or profile target).
PROBES = [
    "SELECT * FROM read_text('{secret}')",
    "SELECT * FROM read_csv('{secret}', header := false)",
    "SELECT * FROM read_blob('{secret}')",
    "SELECT * FROM read_parquet('{parquet}')",
    "SELECT * FROM glob('{folder}/*')",
    "SELECT * FROM '{secret}'",
    "CALL read_text('{secret}')",
    "COPY edges TO '{out}'",
    "COPY (SELECT 1 AS x) TO '{out}' (FORMAT csv)",
    "EXPORT DATABASE '{out}'",
    "ATTACH '{other}' AS other",
    "SET threads = 1",
    "SET enable_external_access = true",
    "RESET threads",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA enable_profiling",
    "PRAGMA profiling_output = '{out}'",
    "CALL enable_logging(storage := 'file', storage_path := '{out}')",
]
# Refused by the one-SELECT rule only: an in-memory scratch database reaches nothing outside.
ENTRY_ONLY_PROBES = ["ATTACH ':memory:' AS scratch", "PRAGMA version", "CALL duckdb_settings()"]

runner = CliRunner()


@pytest.fixture(scope="module")
def db_path(tmp_path_factory) -> Path:
    return hand_database(tmp_path_factory.mktemp("sandbox") / "hand.duckdb")


@pytest.fixture()
def files(tmp_path) -> dict[str, str]:
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET + "\n")
    (folder / LISTED).write_text("x")
    pq.write_table(pa.table({"s": [SECRET]}), folder / "secret.parquet")
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as con:
        con.execute("CREATE TABLE kept AS SELECT ? AS s", [SECRET])
    return {
        "secret": str(folder / "secret.txt"),
        "parquet": str(folder / "secret.parquet"),
        "folder": str(folder),
        "other": str(other),
        "out": str(tmp_path / "written"),
    }


def _assert_nothing_leaked(text: str, files: dict[str, str]) -> None:
    assert SECRET not in text and LISTED not in text, text
    assert not Path(files["out"]).exists(), "the probe wrote a file"


def _assert_refused(exc_info: pytest.ExceptionInfo, files: dict[str, str]) -> None:
    message = str(exc_info.value)
    assert message and "\n" not in message, message
    _assert_nothing_leaked(message, files)


def test_the_probes_are_real(db_path, files):
    """Without the sandbox the same statements do reach the files (else the tests below prove nothing)."""
    with open_database(db_path, read_only=True) as db:
        assert SECRET in str(db.fetchall(PROBES[0].format(**files)))
        assert LISTED in str(db.fetchall(PROBES[4].format(**files)))
        db.execute("COPY (SELECT 1 AS x) TO '{out}' (FORMAT csv)".format(**files))
    assert Path(files["out"]).exists()


@pytest.mark.parametrize("probe", PROBES + ENTRY_ONLY_PROBES)
def test_cli_refuses(db_path, files, probe):
    result = runner.invoke(app, ["sql", str(db_path), probe.format(**files)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    _assert_nothing_leaked(result.output, files)


@pytest.mark.parametrize("probe", PROBES + ENTRY_ONLY_PROBES)
def test_dashboard_console_refuses(db_path, files, probe):
    with open_reader(db_path) as db:
        with pytest.raises(FeaturegraphError) as exc_info:
            console_sql(db, probe.format(**files), limits=QueryLimits(time_limit_s=10, max_rows=100))
        _assert_refused(exc_info, files)
        assert console_sql(db, "SELECT count(*) AS n FROM edges")[0]["n"].to_list() == [17]


@pytest.mark.parametrize("probe", PROBES + ENTRY_ONLY_PROBES)
def test_python_api_refuses(db_path, files, probe):
    with pytest.raises(FeaturegraphError) as exc_info:
        run_sql(db_path, probe.format(**files))
    _assert_refused(exc_info, files)


@pytest.mark.parametrize("probe", PROBES)
def test_the_sandbox_alone_refuses(db_path, files, probe):
    """Run straight on the sandbox's connection, past the one-SELECT rule: DuckDB still refuses."""
    with open_sandbox(db_path) as db:
        with pytest.raises(FeaturegraphError) as exc_info:
            db.fetchall(probe.format(**files))
        _assert_refused(exc_info, files)
        assert db.fetchone("SELECT count(*) FROM edges")[0] == 17  # and the connection still works


def test_no_python_objects_either(db_path):
    """DuckDB's replacement scans would read a Python table in the calling frame by its name."""
    leaked = pa.table({"s": [SECRET]})  # noqa: F841 (read by name, by DuckDB)
    with open_database(db_path, read_only=True) as db:
        assert db.con.sql("SELECT * FROM leaked").fetchall() == [(SECRET,)]
    with open_sandbox(db_path) as db:
        with pytest.raises(duckdb.Error):
            db.con.sql("SELECT * FROM leaked").fetchall()


def test_macros_and_reads_work_through_each_entry(db_path):
    result = runner.invoke(app, ["sql", str(db_path), RECURRING, "-f", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == RECURRING_ROWS
    frame, truncated = run_sql(db_path, RECURRING)
    assert frame.to_dicts() == RECURRING_ROWS and not truncated
    with open_reader(db_path) as db:
        frame, truncated = console_sql(db, RECURRING, limits=QueryLimits(time_limit_s=10, max_rows=100))
        assert frame.to_dicts() == RECURRING_ROWS and not truncated
        edges = console_sql(db, "SELECT direction, neighbour, n FROM feature_edges('3.4')")[0]
        assert edges.to_dicts() == [{"direction": "in", "neighbour": "2.3", "n": 3}]  # prompts 0, 1, 2
    with open_sandbox(db_path) as db:
        assert db.fetchall("SELECT fg_layer('5.10603'), fg_feature('5.10603')") == [(5, 10603)]
        assert db.fetchone("SELECT current_database()")[0] == "hand"


def test_user_sql_needs_the_sandbox(db_path):
    with open_database(db_path, read_only=True) as db:
        with pytest.raises(DatabaseError, match="sandboxed connection"):
            console_sql(db, "SELECT 1")


def test_sandbox_reads_the_write_ahead_log(tmp_path):
    """Rows a writer committed but never checkpointed live in the .wal file: the sandbox sees them."""
    path = hand_database(tmp_path / "wal.duckdb")
    script = (
        "import os, sys\n"
        "from featuregraph.store.db import open_database\n"
        "db = open_database(sys.argv[1])\n"
        "db.execute(\"SET checkpoint_threshold = '1GB'\")\n"
        "db.execute(\"INSERT INTO vocab SELECT run_id, 100, 'walrow' FROM runs\")\n"
        "os._exit(0)  # no close: no checkpoint\n"
    )
    subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert Path(str(path) + ".wal").stat().st_size > 0
    with open_sandbox(path) as db:
        assert db.fetchall("SELECT token FROM vocab WHERE token_id = 100") == [("walrow",)]


def test_sandbox_waits_for_a_writer_then_names_it(tmp_path):
    path = hand_database(tmp_path / "locked.duckdb")
    hold = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
        "time.sleep(float(sys.argv[2]))"
    )
    for seconds, wait_s in ((60, 0.3), (1.0, 30)):
        holder = subprocess.Popen(
            [sys.executable, "-c", hold, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout.readline().strip() == "locked"
            if wait_s < seconds:
                busy = f"in use by another process.*waiting {wait_s:g} s"
                with pytest.raises(DatabaseLockedError, match=busy):
                    open_sandbox(path, wait_s=wait_s)
            else:  # the writer lets go while the sandbox waits
                with open_sandbox(path, wait_s=wait_s) as db:
                    assert db.fetchone("SELECT count(*) FROM edges")[0] == 17
        finally:
            holder.kill()
            holder.wait()


def test_sql_has_a_default_time_limit(db_path, monkeypatch):
    seen = []

    def spy(path, sql, params=None, limits=None):
        seen.append(limits.time_limit_s)
        return run_sql(path, sql, params, limits)

    monkeypatch.setattr("featuregraph.query.readonly.run_sql", spy)
    for extra, expected in (([], 60.0), (["--time-limit", "2.5"], 2.5), (["--time-limit", "0"], None)):
        result = runner.invoke(app, ["sql", str(db_path), "SELECT 1", *extra])
        assert result.exit_code == 0, result.output
        assert seen.pop() == expected


def test_dashboard_warns_off_loopback(db_path, monkeypatch, capsys):
    for address in ("127.0.0.1", "::1", "localhost"):
        assert exposure_warning(address, 8501) is None
    monkeypatch.setattr("featuregraph.dashboard.launch.subprocess.call", lambda *a, **k: 0)
    assert serve(db_path, 8502, "0.0.0.0", headless=True) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "0.0.0.0" in lines[0] and "8502" in lines[0] and "read-only SQL" in lines[0]
    assert serve(db_path, 8502, "127.0.0.1", headless=True) == 0
    assert capsys.readouterr().err == ""
