"""Recurring paths across imported graph files: the chains planted in them come first."""

from __future__ import annotations

import importlib.util
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
            want.append((" -> ".join(f"{layer}.{idx}" for layer, idx in enumerate(chain, start=1)), support))
    assert [(r["path"], r["support"]) for r in top.iter_rows(named=True)] == want
