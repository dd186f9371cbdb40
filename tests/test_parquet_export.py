"""`featuregraph export-parquet`: a hive-partitioned dataset that plain DuckDB reads, kept incremental."""

from __future__ import annotations

import json
import subprocess
import sys

from query_graphs import HAND_GRAPH, LATER_PROMPTS, new_run, prompt_result, write_graph
from typer.testing import CliRunner

from featuregraph.cli import app
from featuregraph.store.db import open_database
from featuregraph.store.parquet_export import MANIFEST
from featuregraph.store.runs import write_prompt_results

# Plain DuckDB in a fresh interpreter: only duckdb is imported, and the script checks that.
PLAIN_READER = """
import json, sys
import duckdb
rows = duckdb.sql(
    "SELECT run_id, prompt_id, up_layer, up_feature, down_layer, down_feature, weight "
    "FROM read_parquet(?, hive_partitioning = true) ORDER BY ALL", params=[sys.argv[1] + "/edges/**/*.parquet"]
).fetchall()
assert not any(m.startswith("featuregraph") for m in sys.modules), "featuregraph was imported"
print(json.dumps(rows))
"""
EDGES = ("SELECT run_id, prompt_id, up_layer, up_feature, down_layer, down_feature, weight "
         "FROM edges ORDER BY ALL")  # fmt: skip


def plain_duckdb_read(out) -> list[list]:
    proc = subprocess.run([sys.executable, "-I", "-c", PLAIN_READER, str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def table_rows(path) -> list[list]:
    with open_database(path, read_only=True) as db:
        return [list(r) for r in db.fetchall(EDGES)]


def test_plain_duckdb_reads_the_export_equal_to_the_tables_and_it_stays_incremental(tmp_path):
    path, out = tmp_path / "fg.duckdb", tmp_path / "dataset"
    with open_database(path) as db:
        one, two = new_run(db, "one"), new_run(db, "two")
        write_graph(db, one, HAND_GRAPH)
        write_graph(db, two, {p: HAND_GRAPH[p] for p in (0, 2)})
    runner = CliRunner()
    first = runner.invoke(app, ["export-parquet", str(path), str(out)])
    assert first.exit_code == 0, first.output
    assert plain_duckdb_read(out) == table_rows(path)
    layout = sorted(str(p.relative_to(out / "edges").parent) for p in (out / "edges").rglob("*.parquet"))
    assert "run_id=1/up_layer=0" in layout and "run_id=2/up_layer=2" in layout
    assert all(p.count("/") == 1 for p in layout)

    with open_database(path) as db:  # more prompts, then only those are exported
        write_prompt_results(db, one, [prompt_result(p, e, t) for p, (t, e) in LATER_PROMPTS.items()])
    second = runner.invoke(app, ["export-parquet", str(path), str(out)])
    assert "2 prompts" in second.output and "batch 2" in second.output
    assert plain_duckdb_read(out) == table_rows(path)
    again = runner.invoke(app, ["export-parquet", str(path), str(out)])
    assert "nothing new" in again.output
    assert json.loads((out / MANIFEST).read_text())["exported"] == {"1": [[0, 5]], "2": [[0, 0], [2, 2]]}


def test_files_of_an_unfinished_export_are_removed_before_the_next(tmp_path):
    path, out = tmp_path / "fg.duckdb", tmp_path / "dataset"
    with open_database(path) as db:
        write_graph(db, new_run(db), HAND_GRAPH)
    assert CliRunner().invoke(app, ["export-parquet", str(path), str(out)]).exit_code == 0
    # a crash after the files of batch 2 moved into place but before the manifest named them
    stray = next((out / "edges").rglob("*.parquet"))
    (stray.parent / "part-2-0.parquet").write_bytes(stray.read_bytes())
    (out / ".staging-2").mkdir()
    result = CliRunner().invoke(app, ["export-parquet", str(path), str(out)])
    assert "nothing new" in result.output
    assert not (stray.parent / "part-2-0.parquet").exists() and not (out / ".staging-2").exists()
    assert plain_duckdb_read(out) == table_rows(path)


def test_a_file_as_the_target_is_refused_in_one_line(tmp_path):
    path = tmp_path / "fg.duckdb"
    with open_database(path) as db:
        write_graph(db, new_run(db), HAND_GRAPH)
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(app, ["export-parquet", str(path), str(tmp_path / "file")])
    assert result.exit_code != 0 and "needs a folder" in result.output
