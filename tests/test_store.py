"""Schema migrations, version checks and unreadable databases."""

from __future__ import annotations

import duckdb
import pytest

from featuregraph.errors import DatabaseError
from featuregraph.store.db import open_database
from featuregraph.store.migrate import available_migrations, current_version, latest_version

EXPECTED_TABLES = {
    "schema_migrations", "runs", "run_saes", "prompts", "tokens", "top_next_tokens", "vocab",
    "activations", "ablations", "edges", "logit_effects",
}  # fmt: skip


def _tables(db) -> set[str]:
    return {r[0] for r in db.fetchall("SELECT table_name FROM duckdb_tables() WHERE NOT internal")}


def test_migrations_build_the_schema_on_an_empty_database(tmp_path):
    with open_database(tmp_path / "fg.duckdb") as db:
        assert current_version(db) == latest_version() == max(m.version for m in available_migrations())
        assert EXPECTED_TABLES <= _tables(db)
        cols = [r[0] for r in db.fetchall("SELECT column_name FROM duckdb_columns() WHERE table_name = 'edges' ORDER BY column_index")]
        assert cols[:7] == ["run_id", "prompt_id", "up_layer", "up_feature", "down_layer", "down_feature", "weight"]
        versions = [r[0] for r in db.fetchall("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [m.version for m in available_migrations()]
    # Opening again applies nothing twice.
    with open_database(tmp_path / "fg.duckdb") as db:
        assert db.fetchone("SELECT count(*) FROM schema_migrations")[0] == len(available_migrations())


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "fg.duckdb"
    open_database(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (999, '0999_future')")
    con.close()
    for read_only in (False, True):
        with pytest.raises(DatabaseError, match=r"schema version 999, newer than this featuregraph"):
            open_database(path, read_only=read_only)


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "junk.duckdb"
    path.write_bytes(b"this is not a database" * 1000)
    with pytest.raises(DatabaseError, match="not a readable DuckDB database"):
        open_database(path, read_only=True)
    with pytest.raises(DatabaseError, match="not a readable DuckDB database"):
        open_database(path)


def test_foreign_duckdb_file_is_refused(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE things (x INTEGER)")
    con.close()
    with pytest.raises(DatabaseError, match="not a featuregraph one"):
        open_database(path)


def test_read_only_open_of_a_missing_file_says_so(tmp_path):
    with pytest.raises(DatabaseError, match="no database at"):
        open_database(tmp_path / "missing.duckdb", read_only=True)
    assert not (tmp_path / "missing.duckdb").exists()


def test_failed_statement_names_the_sql(tmp_path):
    with open_database(tmp_path / "fg.duckdb") as db:
        with pytest.raises(DatabaseError, match=r"\[in: SELECT nope FROM runs\]"):
            db.execute("SELECT nope FROM runs")


def test_a_failing_migration_leaves_no_trace(tmp_path, monkeypatch):
    import featuregraph.store.migrate as mig

    good = mig.available_migrations()
    bad = mig.Migration(latest_version() + 1, "broken", "CREATE TABLE half_done (x INTEGER); SELECT * FROM no_such_table;")
    monkeypatch.setattr(mig, "available_migrations", lambda: good + [bad])
    path = tmp_path / "fg.duckdb"
    with pytest.raises(DatabaseError):
        open_database(path)
    monkeypatch.undo()
    with open_database(path) as db:
        assert "half_done" not in _tables(db)
        assert current_version(db) == latest_version()
