"""``featuregraph info``: what a database holds and whether it is sound, read without taking
the write lock.

Besides the schema version, runs and row counts, it checks the file: that it is as long as
DuckDB's own header says (a truncated copy is not healthy), that every table of the spec can be
read in full (which makes DuckDB verify the checksum of every block), and whether a write-ahead
log was left behind. A run whose status is still ``running`` while no live writer announces it
(store/writer.py) was interrupted; it is named so, with the command that resumes it.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from featuregraph.errors import DatabaseError
from featuregraph.store.db import Database, connect, quote_identifier
from featuregraph.store.migrate import current_version, ensure_schema
from featuregraph.store.run_config import upgrade_config
from featuregraph.store.tables import TABLE_NAMES
from featuregraph.store.writer import describe_writer, live_writer

RUNS_SUMMARY = """
SELECT r.run_id, r.status, r.model, r.model_source, r.prompts_source, r.n_prompts,
       (SELECT count(*) FROM prompts p WHERE p.run_id = r.run_id) AS done,
       (SELECT count(*) FROM run_saes s WHERE s.run_id = r.run_id) AS n_saes,
       r.device, r.dtype, r.config, r.config_version, r.started_at, r.finished_at
FROM runs r ORDER BY r.run_id
"""
RUN_COLUMNS = (
    "run_id", "status", "model", "model_source", "prompts_source", "n_prompts", "done", "n_saes",
    "device", "dtype", "config", "config_version", "started_at", "finished_at",
)  # fmt: skip
# Every table of the spec, as both `info` and the dashboard's overview count them.
COUNTED_TABLES: tuple[str, ...] = tuple(sorted(TABLE_NAMES))
# Table names come from the table spec, never from input.
COUNT_ROWS = "SELECT count(*) FROM {table}"
# Hashing each whole row reads every column of every row group, so DuckDB verifies the
# checksum of every block; count(*) alone is answered from metadata.
READ_ROWS = "SELECT count(hash(__row)) FROM {table} AS __row"
BLOCK_SIZE = "SELECT block_size FROM pragma_database_size()"
USER_TABLES = "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal"
# The last block a table's data lives in (storage_info lists each column segment's block).
LAST_BLOCK = "SELECT max(block_id) FROM pragma_storage_info(?) WHERE persistent AND block_id >= 0"
# A DuckDB file starts with three 4 KiB headers, then blocks of block_size bytes. (The header's
# total_blocks is no bound on the file: blocks can be counted before they are first written.)
FILE_HEADER_BYTES = 3 * 4096


def count_rows(db: Database) -> dict[str, int]:
    """Rows per table of :data:`COUNTED_TABLES`."""
    return {t: int(db.fetchone(COUNT_ROWS.format(table=quote_identifier(t)))[0]) for t in COUNTED_TABLES}


def check_size(db: Database, path: Path) -> None:
    """Raise a one-line :class:`DatabaseError` when a table's data lies past the end of the file."""
    block_size = int(db.fetchone(BLOCK_SIZE)[0])
    # Every table the file holds (not only the spec's: this runs before the schema is checked).
    tables = [r[0] for r in db.fetchall(USER_TABLES)]
    last = [db.fetchone(LAST_BLOCK, [t])[0] for t in tables]
    last_block = max((int(b) for b in last if b is not None), default=-1)
    expected = FILE_HEADER_BYTES + block_size * (last_block + 1)
    size = path.stat().st_size
    if size < expected:
        raise DatabaseError(
            f"{path} is truncated (corrupt): {size:,} bytes on disk, but its tables' data reaches byte "
            f"{expected:,}; restore it from a copy"
        )


def check_file(db: Database, path: Path, full: bool = True) -> list[str]:
    """Raise a one-line :class:`DatabaseError` when a table cannot be read (``full``: every row
    of every table, else nothing beyond the row counts); return notes on what is sound but worth
    knowing (a write-ahead log left behind)."""
    if full:
        for t in COUNTED_TABLES:
            try:
                db.fetchone(READ_ROWS.format(table=quote_identifier(t)))
            except DatabaseError as exc:
                raise DatabaseError(f"{path} is corrupt: table {t} cannot be read: {exc}") from exc
    notes = []
    wal = Path(str(path) + ".wal")
    if wal.exists() and live_writer(path) is None:
        notes.append(
            f"write-ahead log {wal.name} ({_human(wal.stat().st_size)}) was left by a writer that stopped "
            "without a checkpoint: it was read back now, and the next writable open folds it in"
        )
    return notes


def resume_command(db_path: str | Path, run: dict[str, Any]) -> str | None:
    """The ``featuregraph ingest`` command that resumes ``run`` (a row of :data:`RUNS_SUMMARY`),
    rebuilt from its stored config; None when the run did not come from the command line."""
    source = run["prompts_source"]
    if not source or source == "<list>":
        return None
    cfg = upgrade_config(run["config"], run["config_version"])
    model = cfg["model"]
    name = run["model"] if run["model_source"] == "path" else model["name_or_path"]
    args = ["featuregraph", "ingest", source, "--db", str(db_path), "--model", name]
    for flag in ("fold_ln", "center_writing_weights", "center_unembed"):
        if model.get(flag) is False:
            args.append("--no-" + flag.replace("_", "-"))
    releases = {s["release"] for s in cfg["saes"] if s.get("release")}
    if len(releases) > 1:
        return None  # the command line takes one --sae-release
    for sae in cfg["saes"]:
        args += ["--sae", sae["path"]] if sae.get("path") else ["--sae-id", sae["sae_id"]]
    if releases:
        args += ["--sae-release", releases.pop()]
    args += ["--device", cfg["device"], "--dtype", cfg["dtype"]]
    for key, value in cfg["sweep"].items():
        if not (key == "read_position" and value == -1):
            args += ["--" + key.replace("_", "-"), str(value)]
    if cfg["prepend_bos"] is not None:
        args.append("--prepend-bos" if cfg["prepend_bos"] else "--no-prepend-bos")
    policies = cfg["ingest"]
    if policies["too_long"] != "reject":
        args += ["--too-long", policies["too_long"]]
    if policies["bad_prompts"] != "error":
        args += ["--bad-prompts", policies["bad_prompts"]]
    return shlex.join(args)


def _run_states(path: Path, runs: list[dict[str, Any]]) -> None:
    """Mark each run whose status is ``running`` as running (a live writer announces it) or
    interrupted (none does: its ingest was killed or crashed), with the resume command."""
    writer = live_writer(path)
    for r in runs:
        r["state"], r["resume"] = r["status"], None
        if r["status"] != "running":
            continue
        if writer is not None and writer.get("run_id") in (None, r["run_id"]):
            r["writer"] = describe_writer(path)
        else:
            r["state"] = "interrupted"
            r["resume"] = resume_command(path, r)


def database_info(path: str | Path, full_check: bool = True) -> dict[str, Any]:
    """Schema version, runs (with their state), row counts per table, file size (bytes) and
    notes from the file check of a database; raises :class:`DatabaseError` for an unsound file."""
    path = Path(path)
    with connect(path, read_only=True) as db:
        check_size(db, path)  # before anything reads a block the file may not have
        ensure_schema(db)
        notes = check_file(db, path, full_check)
        version = current_version(db)
        runs = [dict(zip(RUN_COLUMNS, row, strict=True)) for row in db.fetchall(RUNS_SUMMARY)]
        counts = count_rows(db)
    _run_states(path, runs)
    size = path.stat().st_size
    wal = Path(str(path) + ".wal")
    if wal.exists():
        size += wal.stat().st_size
    return {
        "path": str(path), "schema_version": version, "runs": runs, "row_counts": counts,
        "size_bytes": size, "check": "every table read in full" if full_check else "row counts only",
        "notes": notes,
    }  # fmt: skip


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_info(info: dict[str, Any]) -> str:
    """:func:`database_info` as the lines ``featuregraph info`` prints."""
    lines = [
        f"database: {info['path']} ({_human(info['size_bytes'])} on disk)",
        f"file: sound ({info['check']})",
        *(f"note: {n}" for n in info["notes"]),
        f"schema version: {info['schema_version']}",
        f"runs: {len(info['runs'])}",
    ]
    for r in info["runs"]:
        state = r["state"]
        if state == "interrupted":
            state = "interrupted (status 'running', but no writer is alive: its ingest was stopped)"
        elif r.get("writer"):
            state = f"running ({r['writer']})"
        lines.append(
            f"  run {r['run_id']}: {state}, {r['done']}/{r['n_prompts']} prompts, {r['n_saes']} SAEs, "
            f"model {r['model']}, {r['device']}/{r['dtype']}, started {r['started_at']:%Y-%m-%d %H:%M:%S}"
        )
        if r["state"] == "interrupted":
            how = r["resume"] or "re-run the ingest that started it, with the same prompts and settings"
            lines.append(f"    resume it with: {how}")
    lines.append("rows:")
    width = max(len(t) for t in info["row_counts"])
    for table, n in info["row_counts"].items():
        lines.append(f"  {table:<{width}}  {n:>12,}")
    return "\n".join(lines)


__all__ = ["COUNTED_TABLES", "count_rows", "check_size", "check_file", "database_info", "format_info", "resume_command"]
