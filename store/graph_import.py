"""``featuregraph import-graph``: Neuronpedia / circuit-tracer graph files into a database.

Each file becomes one prompt of a run of method ``imported:<generator>`` (one run per
generator and scan): its rows in ``graphs``/``graph_nodes``/``graph_links`` and its feature ->
feature projection through the ingest's write path (:mod:`store.graph_rows`). Files land in
batches, one transaction each, so a killed import leaves whole batches; running the same
command again skips every file whose content hash is stored already (that is both the
duplicate rule and the resume). A bad file is skipped with a one-line reason and never
leaves a row.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import multiprocessing
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
from pydantic import ValidationError

import featuregraph
from featuregraph.errors import InputError
from featuregraph.store.db import Database, open_database
from featuregraph.store.graph_model import GraphFile, validation_reason
from featuregraph.store.graph_rows import GraphRows, graph_rows
from featuregraph.store.runs import create_run, find_run, finish_run, insert_prompt_tables, now, prompt_tables
from featuregraph.store.snapshot import writer_session
from featuregraph.store.tables import table

STORED_HASHES = "SELECT content_sha256 FROM graphs"
NEXT_PROMPT_ID = "SELECT coalesce(max(prompt_id) + 1, 0) FROM prompts WHERE run_id = ?"
RUN_OPEN = "UPDATE runs SET status = 'running', finished_at = NULL WHERE run_id = ?"
RUN_COUNT = "UPDATE runs SET n_prompts = (SELECT count(*) FROM prompts p WHERE p.run_id = ?) WHERE run_id = ?"

# Imported runs carry no sweep: these settings say so (the run's generated columns need them).
_IMPORTED_SWEEP = {"coefficient": 0.0, "edge_top_k": 0, "edge_floor": 0.0, "logit_top_k": 0, "top_next_k": 0,
                   "read_position": -1}  # fmt: skip


@dataclass
class ImportSummary:
    n_files: int = 0
    n_imported: int = 0
    n_duplicates: int = 0
    bad: list[tuple[str, str]] = field(default_factory=list)  # (file, one-line reason)
    runs: dict[int, str] = field(default_factory=dict)  # run_id -> method
    n_links: int = 0
    n_edges: int = 0
    seconds: float = 0.0


def expand_files(inputs: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The graph files named by ``inputs`` (files, folders searched for ``*.json`` at any depth,
    glob patterns), sorted and without repeats; plus ``(input, reason)`` for each that names none."""
    found: list[Path] = []
    missing: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            hits = sorted(x for x in p.rglob("*.json") if x.is_file())
        elif p.is_file():
            hits = [p]
        else:
            hits = sorted(Path(x) for x in glob.glob(str(item), recursive=True) if Path(x).is_file())
        if not hits:
            missing.append((str(item), "no such file, or no .json file in that folder or pattern"))
        found.extend(hits)
    unique = list(dict.fromkeys(x.resolve() for x in found))
    return unique, missing


def read_graph_file(path: Path, skip: frozenset[str] = frozenset()) -> tuple[GraphFile | None, str]:
    """A validated graph file and the sha256 of its bytes; InputError (one line) if it is not one.

    A file whose sha256 is in ``skip`` (already stored) is not validated: ``(None, sha256)``.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}") from None
    sha = hashlib.sha256(data).hexdigest()
    if sha in skip:
        return None, sha
    try:
        # pydantic parses the bytes itself: several times faster than json.loads and then validating
        return GraphFile.model_validate_json(data), sha
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise InputError(f"not JSON: {first['msg']}") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise InputError("not a graph: the top level is not a JSON object") from None
        raise InputError(f"not a graph file: {validation_reason(exc)}") from None


# Below this many files parsing stays in the importing process: starting workers costs more.
PARALLEL_MIN_FILES = 64

# In a parsing worker: the hashes stored before the import began (set once, by the pool's initializer).
_stored: frozenset[str] = frozenset()


def _set_stored(stored: frozenset[str]) -> None:
    global _stored
    _stored = stored


def _parse(
    path: Path, stamp: Any, stored: frozenset[str] | None = None
) -> tuple[Path, str | None, GraphRows | None, str | None, str | None]:
    """(path, sha256, rows, scan, None) for a graph file; (path, sha256, None, None, None) for one
    stored already (a resumed import neither validates nor flattens it again); or
    (path, sha256 or None, None, None, reason) for a bad one. ``stored``: default, the worker's."""
    try:
        graph, sha = read_graph_file(path, _stored if stored is None else stored)
    except InputError as exc:
        return path, None, None, None, str(exc).splitlines()[0]
    if graph is None:
        return path, sha, None, None, None
    try:
        return path, sha, graph_rows(graph, sha, str(path), stamp), graph.metadata.scan, None
    except (InputError, ValueError) as exc:
        return path, sha, None, None, str(exc).splitlines()[0]


def _parsed(files: list[Path], stamp: Any, workers: int, stored: frozenset[str]) -> Iterator[tuple]:
    """:func:`_parse` of every file, in order; in ``workers`` processes when there are enough files.

    Validating and flattening a file is most of an import's CPU (pydantic and Python loops), so
    it runs beside the database writes; ``spawn`` because the importing process holds DuckDB.
    ``stored``: the content hashes already in the database, which are not parsed again.
    """
    if workers < 2 or len(files) < PARALLEL_MIN_FILES:
        yield from (_parse(p, stamp, stored) for p in files)
        return
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_set_stored, initargs=(stored,)) as pool:
        yield from pool.imap(functools.partial(_parse, stamp=stamp), files, chunksize=8)


def _imported_run(db: Database, generator: str, scan: str) -> int:
    """The run holding graphs of ``generator`` for model ``scan``: found by its key, or created."""
    method = f"imported:{generator}"
    # feature_sites: features are stored with their site code (migration 0014). Runs imported
    # before stored every feature as residual; new files go to a new run rather than mix codings.
    key_fields = {"method": method, "scan": scan, "feature_sites": 1}
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()
    found = find_run(db, key)
    if found is not None:
        db.execute(RUN_OPEN, [found[0]])
        return found[0]
    row = {
        "model": scan, "model_source": "imported", "model_sha256": None, "model_config": {"imported": True},
        "prompts_source": None, "n_prompts": 0, "prepend_bos": False, "device": "-",
        "config": {"method": method, "sweep": dict(_IMPORTED_SWEEP), "dtype": "float64"},
        "featuregraph_version": featuregraph.__version__, "torch_version": "-", "sae_lens_version": "-",
        "transformer_lens_version": "-",
    }  # fmt: skip
    return create_run(db, key, row, [], [])


def _arrow(name: str, columns: dict[str, list], run_ids: list[int], prompt_ids: list[int]) -> pa.Table:
    spec = table(name)
    data = {"run_id": run_ids, "prompt_id": prompt_ids, **columns}
    return pa.table({c: data[c] for c in spec.written}, schema=spec.arrow_schema())


def _write_batch(db: Database, batch: list[tuple[int, int, GraphRows]]) -> None:
    """One transaction: every graph of ``batch`` (run_id, prompt_id, rows) lands, or none."""
    graphs: dict[str, list] = defaultdict(list)
    nodes: dict[str, list] = defaultdict(list)
    links: dict[str, list] = defaultdict(list)
    ids: dict[str, tuple[list, list]] = {k: ([], []) for k in ("graphs", "graph_nodes", "graph_links")}
    by_run: dict[int, list] = defaultdict(list)
    for run_id, prompt_id, rows in batch:
        for key, value in rows.graph.items():
            graphs[key].append(value)
        for target, source, name in ((nodes, rows.nodes, "graph_nodes"), (links, rows.links, "graph_links")):
            n = len(next(iter(source.values())))
            for key, values in source.items():
                target[key].extend(values)
            ids[name][0].extend([run_id] * n)
            ids[name][1].extend([prompt_id] * n)
        ids["graphs"][0].append(run_id)
        ids["graphs"][1].append(prompt_id)
        rows.projection.prompt_id = prompt_id
        by_run[run_id].append(rows.projection)
    with db.transaction():
        db.insert_arrow("graph_nodes", _arrow("graph_nodes", nodes, *ids["graph_nodes"]))
        db.insert_arrow("graph_links", _arrow("graph_links", links, *ids["graph_links"]))
        db.insert_arrow("graphs", _arrow("graphs", graphs, *ids["graphs"]))
        for run_id, results in by_run.items():
            insert_prompt_tables(db, run_id, prompt_tables(run_id, results))


def import_graphs(
    db_path: str | Path,
    inputs: Iterable[str | Path],
    batch_size: int = 256,
    on_file: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> ImportSummary:
    """Import the graph files named by ``inputs`` (see :func:`expand_files`) into ``db_path``.

    ``batch_size`` files per transaction. ``on_start(n_files)`` once the files are listed,
    ``on_file(k)`` after every ``k`` files handled (a progress bar's hooks). ``workers``:
    processes that parse files (default: one per CPU, at most 4; 0 or 1: none).
    """
    if workers is None:
        workers = min(os.cpu_count() or 1, 4)
    start = time.perf_counter()
    files, missing = expand_files(inputs)
    summary = ImportSummary(n_files=len(files), bad=list(missing))
    if not files:
        raise InputError("import-graph: no graph file found in " + ", ".join(str(i) for i in inputs))
    if on_start:
        on_start(len(files))
    db = open_database(db_path)
    # Readers read its snapshots while the import holds the file; they go when it is closed.
    with writer_session(db_path, {"what": "featuregraph import-graph", "holds_lock": "for its whole run"}, db) as snapshots:
        snapshots.start(db)
        seen = {r[0] for r in db.fetchall(STORED_HASHES)}
        next_id: dict[int, int] = {}
        run_of: dict[tuple[str, str], int] = {}
        batch: list[tuple[int, int, GraphRows]] = []
        stamp = now()
        for path, sha, rows, scan, reason in _parsed(files, stamp, workers, frozenset(seen)):
            if on_file:
                on_file(1)
            if sha is not None and sha in seen:
                summary.n_duplicates += 1
                continue
            if rows is None:
                summary.bad.append((str(path), reason))
                continue
            seen.add(sha)
            key = (rows.generator, scan)
            if key not in run_of:
                run_of[key] = _imported_run(db, *key)
            run_id = run_of[key]
            summary.runs[run_id] = f"imported:{rows.generator}"
            if run_id not in next_id:
                next_id[run_id] = int(db.fetchone(NEXT_PROMPT_ID, [run_id])[0])
            batch.append((run_id, next_id[run_id], rows))
            next_id[run_id] += 1
            summary.n_links += len(rows.links["weight"])
            summary.n_edges += len(rows.projection.tables["edges"]["weight"])
            if len(batch) >= batch_size:
                _write_batch(db, batch)
                snapshots.after_commit(db)
                summary.n_imported += len(batch)
                batch = []
        if batch:
            _write_batch(db, batch)
            summary.n_imported += len(batch)
        for run_id in summary.runs:
            db.execute(RUN_COUNT, [run_id, run_id])
            finish_run(db, run_id, "complete")
    summary.seconds = time.perf_counter() - start
    return summary


__all__ = ["ImportSummary", "expand_files", "import_graphs", "read_graph_file"]
