"""The query layer's schema: migrations on an empty DuckDB, on an older database, and docs/sql.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from helpers import insert_old_run
from query_graphs import HAND_GRAPH, prompt_result

from featuregraph.store.db import Database, open_database
from featuregraph.store.migrate import available_migrations
from featuregraph.store.runs import write_prompt_results

ROOT = Path(__file__).resolve().parents[1]

QUERY_TABLES = {"edge_summary_base", "edge_occurrences_base", "edge_delta"}
QUERY_VIEWS = {"edge_stats", "edge_summary", "edge_occurrences"}
QUERY_MACROS = {
    "fg_sign", "fg_node", "fg_check_node", "fg_layer", "fg_feature",
    "prompt_graph", "recurring_paths", "path_prompts", "feature_edges", "feature_logits", "top_contexts",
    "compare_prompts",
}  # fmt: skip
TABLE_MACROS = {"prompt_graph", "recurring_paths", "path_prompts", "feature_edges", "feature_logits", "top_contexts",
                "compare_prompts"}  # fmt: skip

MACROS = """
SELECT DISTINCT function_name, function_type FROM duckdb_functions()
WHERE database_name = current_database() AND function_type IN ('macro', 'table_macro') AND NOT internal
"""
VIEWS = "SELECT view_name FROM duckdb_views() WHERE database_name = current_database() AND NOT internal"
TABLES = "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal"


def _catalog(db: Database) -> tuple[set[str], set[str], dict[str, str]]:
    tables = {r[0] for r in db.fetchall(TABLES)}
    views = {r[0] for r in db.fetchall(VIEWS)}
    macros = {name: kind for name, kind in db.fetchall(MACROS)}
    return tables, views, macros


def test_every_migration_on_an_empty_database():
    con = duckdb.connect(":memory:")
    for mig in available_migrations():
        con.execute(mig.sql)
    db = Database(con, ":memory:", read_only=False)
    tables, views, macros = _catalog(db)
    assert QUERY_TABLES <= tables and "edges" in tables
    assert QUERY_VIEWS <= views  # (later migrations may add their own)
    assert QUERY_MACROS <= set(macros)
    assert TABLE_MACROS <= {m for m, kind in macros.items() if kind == "table_macro"}
    # Every helper runs (and returns nothing) on the empty schema.
    for sql in ("SELECT * FROM prompt_graph(0)", "SELECT * FROM recurring_paths()",
                "SELECT * FROM path_prompts(['0.1', '1.2'])", "SELECT * FROM feature_edges('0.1')",
                "SELECT * FROM feature_logits('0.1')", "SELECT * FROM top_contexts('0.1')",
                "SELECT * FROM compare_prompts(0, 1)", "SELECT * FROM edge_stats"):  # fmt: skip
        assert db.fetchall(sql) == []
    db.close()


def test_an_older_database_gets_its_summary_from_its_edges(tmp_path):
    path = tmp_path / "v1.duckdb"
    first = available_migrations()[0]
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    con.execute(first.sql)
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (1, '0001_initial')")
    insert_old_run(con, "k", "complete", model="m", model_config={}, n_prompts=4, logit_top_k=10, top_next_k=10,
               prompts_source=None, featuregraph_version="0")  # fmt: skip
    for prompt, (_, edges) in HAND_GRAPH.items():
        for edge in edges:
            con.execute("INSERT INTO edges VALUES (1, ?, ?, ?, ?, ?, ?)", [prompt, *edge])
    con.close()
    with open_database(path) as db:  # applies 0002 and 0003
        n = dict(((r[0], r[1], r[2]), r[3]) for r in db.fetchall("SELECT up, down, sign, n FROM edge_stats"))
        assert n == {("0.1", "1.2", 1): 4, ("1.2", "2.3", -1): 3, ("1.2", "2.3", 1): 1, ("2.3", "3.4", 1): 3,
                     ("0.1", "1.5", 1): 2, ("1.5", "2.6", 1): 3, ("2.6", "3.7", -1): 1}  # fmt: skip
        assert db.fetchone("SELECT count(*) FROM edge_occurrences")[0] == 15
        assert db.fetchone("SELECT count(*) FROM edge_occurrences WHERE n_sorted IS NULL")[0] == 0
        rows = db.fetchall("SELECT support FROM recurring_paths(n_edges := 3)")
        assert rows == [(2,)]


def test_the_writer_keeps_the_summary_inside_its_transaction(tmp_path, monkeypatch):
    import featuregraph.store.runs as runs

    with open_database(tmp_path / "tx.duckdb") as db:
        from query_graphs import new_run

        run = new_run(db)
        write_prompt_results(db, run, [prompt_result(0, HAND_GRAPH[0][1])])

        def broken(*args, **kwargs):
            raise RuntimeError("boom")

        monkeypatch.setattr(runs, "_prompt_rows", broken)
        with pytest.raises(RuntimeError):
            write_prompt_results(db, run, [prompt_result(1, HAND_GRAPH[1][1])])
        assert db.fetchone("SELECT sum(n) FROM edge_summary")[0] == len(HAND_GRAPH[0][1])
        assert db.fetchone("SELECT count(*) FROM edges")[0] == len(HAND_GRAPH[0][1])


def test_docs_cover_the_public_sql_interface():
    doc = (ROOT / "docs" / "sql.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,4} `?([a-z_]+)", doc, flags=re.MULTILINE))
    public = (
        QUERY_TABLES
        | QUERY_VIEWS
        | QUERY_MACROS
        | {
            "edges",
            "prompts",
            "tokens",
            "activations",
            "logit_effects",
            "vocab",
            "runs",
            "run_saes",
            "ablations",
            "top_next_tokens",
        }
    ) - {"fg_check_node"}
    assert public <= headings, sorted(public - headings)
    for name in TABLE_MACROS:
        assert f"FROM {name}(" in doc, f"no example for {name}"


def test_the_query_layer_imports_without_torch():
    code = (
        "import sys, query.api, query.cli, query.readonly, query.output, store.summary, store.optimize; "
        "assert 'torch' not in sys.modules and 'sae_lens' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
