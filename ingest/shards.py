"""Parquet shards: how distributed sweep workers hand whole prompt groups to the one merger.

Layout under the shard root (default ``DB.shards/`` beside the database)::

    <run key, 16 hex>/                 one folder per run: shards of different runs never mix
        driver.lock                    locked (flock) by the one driver/merger working on the run
        g000012-1a2b3c4d.shard/        a complete shard: one group of prompts
            prompts.parquet, tokens.parquet, ...   what store.runs.prompt_tables returns
            manifest.json              written last: format, run key, group, prompt ids, rows
        g000013-....tmp-<random>/      a shard being written: ignored, removed when a driver starts
        g000011-....merged-<random>/   a merged shard being deleted: likewise

Protocol. A worker writes a shard's files into a ``.tmp-`` folder, flushes them to disk and
renames the folder to ``.shard``: a rename is atomic, so a ``.shard`` folder is always
complete (if the name is taken, the group was written before, with the same rows, and the
new copy is dropped). The merger loads a batch of shards in ONE database transaction,
skipping prompts the database already has, then renames the shards to ``.merged-`` and
deletes them. A crash anywhere leaves either a complete shard (merged next time: at most
once, because present prompts are skipped) or a stored prompt (its shard is skipped and
deleted): never half a prompt, never a prompt twice.

``FEATUREGRAPH_CRASH_AT=POINT[:N]`` kills the process with SIGKILL the N-th time it passes
``POINT`` (``merge_in_transaction``, ``merge_committed``, ``shard_written``): the crash
tests use it to stop a merger or worker at the worst moments.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featuregraph.errors import DatabaseError, InputError
from featuregraph.store.db import Database
from featuregraph.store.runs import done_prompt_ids, insert_prompt_tables, now
from featuregraph.store.summary import maybe_fold

log = logging.getLogger(__name__)

SHARD_FORMAT = 1
MANIFEST = "manifest.json"
CRASH_ENV = "FEATUREGRAPH_CRASH_AT"
_crash_hits: Counter[str] = Counter()


def crash_point(name: str) -> None:
    """Die here (SIGKILL) if ``FEATUREGRAPH_CRASH_AT`` says so; see the module docstring."""
    want = os.environ.get(CRASH_ENV)
    if not want:
        return
    point, _, nth = want.partition(":")
    if point != name:
        return
    _crash_hits[name] += 1
    if _crash_hits[name] == int(nth or 1):
        log.warning("crash point %s reached: killing pid %d", name, os.getpid())
        os.kill(os.getpid(), signal.SIGKILL)


def default_shard_root(db_path: str | Path) -> Path:
    return Path(str(db_path) + ".shards")


def run_shard_dir(root: str | Path, run_key: str) -> Path:
    return Path(root) / run_key[:16]


def shard_name(group_index: int, prompt_ids: list[int]) -> str:
    digest = hashlib.sha256(",".join(map(str, prompt_ids)).encode()).hexdigest()[:8]
    return f"g{group_index:06d}-{digest}"


def encode_tables(tables: dict[str, pa.Table]) -> dict[str, bytes]:
    """Each table as the bytes of a Parquet file (what a remote worker ships to the driver)."""
    out = {}
    for name, table in tables.items():
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        out[f"{name}.parquet"] = sink.getvalue()
    return out


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_shard(
    run_dir: Path, name: str, run_key: str, group_index: int, prompt_ids: list[int], files: dict[str, bytes]
) -> Path:
    """Write a shard atomically (temporary folder, then rename); return its final path."""
    final = run_dir / f"{name}.shard"
    if final.exists():
        return final
    tmp = run_dir / f"{name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    for fname, data in files.items():
        _write_file(tmp / fname, data)
    manifest = {
        "format": SHARD_FORMAT,
        "run_key": run_key,
        "group": group_index,
        "prompt_ids": list(prompt_ids),
        "files": sorted(files),
    }
    _write_file(tmp / MANIFEST, json.dumps(manifest).encode())
    _fsync_dir(tmp)
    crash_point("shard_written")
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # written before (same group, same rows)
    _fsync_dir(run_dir)
    return final


def complete_shards(run_dir: Path) -> list[Path]:
    """The complete shards in a run's folder, in group order."""
    if not run_dir.exists():
        return []
    return sorted(p for p in run_dir.iterdir() if p.name.endswith(".shard") and p.is_dir())


def clean_stale(run_dir: Path) -> int:
    """Remove half-written and half-deleted shards (call only while no worker writes)."""
    n = 0
    for p in list(run_dir.iterdir()) if run_dir.exists() else []:
        if ".tmp-" in p.name or ".merged-" in p.name:
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


@contextmanager
def driver_lock(run_dir: Path) -> Iterator[None]:
    """One driver per run at a time (two would merge the same shards and race on clean-up)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / "driver.lock", "a+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            raise InputError(f"another featuregraph ingest is already working on this run ({who}); wait for it or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield
    finally:
        f.close()


@dataclass(frozen=True)
class Manifest:
    path: Path
    run_key: str
    group: int
    prompt_ids: list[int]
    files: list[str]


def read_manifest(shard: Path) -> Manifest:
    try:
        m = json.loads((shard / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise DatabaseError(f"{shard}: unreadable shard manifest ({exc})") from None
    if m.get("format") != SHARD_FORMAT:
        raise DatabaseError(f"{shard}: shard format {m.get('format')!r}, this featuregraph reads {SHARD_FORMAT}")
    return Manifest(shard, m["run_key"], int(m["group"]), [int(i) for i in m["prompt_ids"]], list(m["files"]))


def read_shard_tables(manifest: Manifest) -> dict[str, pa.Table]:
    return {f.removesuffix(".parquet"): pq.read_table(manifest.path / f) for f in manifest.files}


def _restamp(table: pa.Table, run_id: int, stamp) -> pa.Table:
    """The merger's run id (a shard only knows its run by key) and, on ``prompts``, the time it landed."""
    i = table.schema.get_field_index("run_id")
    table = table.set_column(i, "run_id", pa.array(np.full(table.num_rows, run_id, np.int32)))
    j = table.schema.get_field_index("ingested_at")
    if j >= 0:
        table = table.set_column(j, "ingested_at", pa.array([stamp] * table.num_rows, pa.timestamp("us")))
    return table


@dataclass(frozen=True)
class MergeResult:
    shards: list[Path]
    prompt_ids: list[int]  # prompts this merge stored (not those found stored already)


def merge_shards(db: Database, run_id: int, run_key: str, shards: list[Path]) -> MergeResult:
    """Load ``shards`` into the database in one transaction, through the same insert path as
    the single-process ingest (so the summary tables stay right); skip stored prompts."""
    manifests = [read_manifest(s) for s in shards]
    for m in manifests:
        if m.run_key != run_key:
            raise DatabaseError(f"{m.path}: shard of another run (key {m.run_key[:16]}), not {run_key[:16]}")
    done = done_prompt_ids(db, run_id)
    parts: dict[str, list[pa.Table]] = {}
    new_ids: list[int] = []
    for m in manifests:
        todo = [i for i in m.prompt_ids if i not in done]
        if not todo:
            continue  # merged before a crash that came ahead of its deletion
        tables = read_shard_tables(m)
        if len(todo) < len(m.prompt_ids):
            keep = pa.array(todo, pa.int32())
            tables = {k: t.filter(pc.is_in(t.column("prompt_id"), value_set=keep)) for k, t in tables.items()}
        for name, table in tables.items():
            parts.setdefault(name, []).append(table)
        new_ids += todo
        done.update(todo)
    if new_ids:
        stamp = now()
        combined = {
            name: _restamp(pa.concat_tables(ts, promote_options="default"), run_id, stamp)
            for name, ts in parts.items()
        }
        with db.transaction():
            insert_prompt_tables(db, run_id, combined)
            crash_point("merge_in_transaction")
        crash_point("merge_committed")
        maybe_fold(db)
    return MergeResult(list(shards), sorted(new_ids))


def discard_shards(shards: list[Path]) -> None:
    """Delete merged shards: rename first, so a crash never leaves a partial ``.shard`` folder."""
    for s in shards:
        gone = s.with_name(f"{s.name.removesuffix('.shard')}.merged-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(s, gone)
        except FileNotFoundError:
            continue
        shutil.rmtree(gone, ignore_errors=True)


__all__ = [
    "crash_point", "default_shard_root", "run_shard_dir", "shard_name", "encode_tables", "write_shard",
    "complete_shards", "clean_stale", "driver_lock", "read_manifest", "merge_shards", "discard_shards",
    "MergeResult",
]  # fmt: skip
