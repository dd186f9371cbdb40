"""Recurring paths across imported graph files: the chains planted in them come first."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import featuregraph.query.api as api
from featuregraph.store.db import open_database
from featuregraph.store.graph_import import import_graphs

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "graph_files_bench.py"


def _bench():
    spec = importlib.util.spec_from_file_location("graph_files_bench", _BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_planted_chains_across_200_imported_graphs_come_first(tmp_path):
    bench = _bench()
    files = bench.write_graph_files(tmp_path / "files", 200, seed=3)
    summary = import_graphs(tmp_path / "g.duckdb", [tmp_path / "files"])
    assert (summary.n_imported, summary.bad) == (200, [])
    with open_database(tmp_path / "g.duckdb", read_only=True) as db:
        top = api.recurring_paths(db, 3, 2, limit=3)
        # each planted chain's support, counted from the files' own metadata-free content:
        # a file holds chain c when all of its feature nodes are there
        want = []
        for chain, _ in bench.PLANTED:
            names = {f"{layer}_{idx}_" for layer, idx in enumerate(chain, start=1)}
            support = sum(all(f'"{n}' in f.read_text() for n in names) for f in files)
            # circuit-tracer's cross-layer transcoder features: the transcoder site, L.tc.F
            want.append((" -> ".join(f"{layer}.tc.{idx}" for layer, idx in enumerate(chain, start=1)), support))
    assert [(r["path"], r["support"]) for r in top.iter_rows(named=True)] == want


def test_parsing_in_worker_processes_stores_what_one_process_stores(tmp_path):
    bench = _bench()
    files = bench.write_graph_files(tmp_path / "files", 70, seed=5)
    (tmp_path / "files" / "zz_bad.json").write_text('{"metadata": {}}')
    (tmp_path / "files" / "zz_copy.json").write_bytes(files[0].read_bytes())
    dbs = {}
    for workers in (0, 2):
        summary = import_graphs(tmp_path / f"w{workers}.duckdb", [tmp_path / "files"], batch_size=16, workers=workers)
        assert (summary.n_imported, summary.n_duplicates) == (70, 1)
        assert [Path(f).name for f, _ in summary.bad] == ["zz_bad.json"]
        dbs[workers] = summary
    assert dbs[0].bad == dbs[2].bad
    # everything but the run ids and the import's clock
    tables = {"graph_nodes": "run_id", "graph_links": "run_id", "edges": "run_id", "prompts": "run_id, ingested_at",
              "graphs": "run_id, imported_at"}  # fmt: skip
    with open_database(tmp_path / "w0.duckdb", read_only=True) as a, open_database(tmp_path / "w2.duckdb", read_only=True) as b:
        for name, skip in tables.items():
            sql = f"SELECT * EXCLUDE ({skip}) FROM {name} ORDER BY ALL"
            assert a.fetchall(sql) == b.fetchall(sql), name


def test_a_reader_during_an_import_reads_its_snapshot_at_once(tmp_path, monkeypatch):
    from featuregraph.store import graph_import, snapshot
    from featuregraph.store.db import LOCK_WAIT_ENV
    from featuregraph.store.snapshot import SNAPSHOT_ENV, snapshot_path

    bench = _bench()
    bench.write_graph_files(tmp_path / "files", 40, seed=7)
    db_path = tmp_path / "g.duckdb"
    monkeypatch.setenv(SNAPSHOT_ENV, "0")  # a snapshot after every batch,
    monkeypatch.setattr(snapshot, "COPY_SHARE", 1e9)  # whatever the copies cost
    monkeypatch.setenv(LOCK_WAIT_ENV, "0")  # a reader that had to wait would fail at once
    reader = (
        "import sys; from featuregraph.query.reader import open_reader\n"
        "with open_reader(sys.argv[1]) as db:\n"
        "    print(db.snapshot_time is not None, db.fetchone('SELECT count(*) FROM graphs')[0])"
    )
    seen, calls = [], []
    write_batch = graph_import._write_batch

    def read_then_write(db, batch):
        if len(calls) == 1:  # the importer holds the file; its snapshot after the first batch is published
            out = subprocess.run([sys.executable, "-c", reader, str(db_path)], capture_output=True, text=True)
            seen.append(out.stdout.split() or [out.stderr])
        calls.append(len(batch))
        write_batch(db, batch)

    monkeypatch.setattr(graph_import, "_write_batch", read_then_write)
    summary = import_graphs(db_path, [tmp_path / "files"], batch_size=16, workers=0)
    assert summary.n_imported == 40 and calls == [16, 16, 8]
    assert seen == [["True", "16"]]  # at once, and exactly the first committed batch
    assert not snapshot_path(db_path).exists()
