"""``featuregraph info``: what a database holds, read without taking the write lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featuregraph.store.db import SCHEMA_TABLES, open_database, quote_identifier
from featuregraph.store.migrate import current_version

RUNS_SUMMARY = """
SELECT r.run_id, r.status, r.model, r.n_prompts,
       (SELECT count(*) FROM prompts p WHERE p.run_id = r.run_id) AS done,
       (SELECT count(*) FROM run_saes s WHERE s.run_id = r.run_id) AS n_saes,
       r.device, r.dtype, r.started_at, r.finished_at
FROM runs r ORDER BY r.run_id
"""
# Table names come from the fixed schema, never from input; see store.db.SCHEMA_TABLES.
COUNT_ROWS = "SELECT count(*) FROM {table}"


def database_info(path: str | Path) -> dict[str, Any]:
    """Schema version, runs, row counts per table and file size (bytes) of a database."""
    path = Path(path)
    with open_database(path, read_only=True) as db:
        version = current_version(db)
        cols = ["run_id", "status", "model", "n_prompts", "done", "n_saes", "device", "dtype", "started_at", "finished_at"]
        runs = [dict(zip(cols, row)) for row in db.fetchall(RUNS_SUMMARY)]
        counts = {t: int(db.fetchone(COUNT_ROWS.format(table=quote_identifier(t)))[0]) for t in sorted(SCHEMA_TABLES)}
    size = path.stat().st_size
    wal = Path(str(path) + ".wal")
    if wal.exists():
        size += wal.stat().st_size
    return {"path": str(path), "schema_version": version, "runs": runs, "row_counts": counts, "size_bytes": size}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_info(info: dict[str, Any]) -> str:
    lines = [
        f"database: {info['path']} ({_human(info['size_bytes'])} on disk)",
        f"schema version: {info['schema_version']}",
        f"runs: {len(info['runs'])}",
    ]
    for r in info["runs"]:
        lines.append(
            f"  run {r['run_id']}: {r['status']}, {r['done']}/{r['n_prompts']} prompts, {r['n_saes']} SAEs, "
            f"model {r['model']}, {r['device']}/{r['dtype']}, started {r['started_at']:%Y-%m-%d %H:%M:%S}"
        )
    lines.append("rows:")
    width = max(len(t) for t in info["row_counts"])
    for table, n in info["row_counts"].items():
        lines.append(f"  {table:<{width}}  {n:>12,}")
    return "\n".join(lines)


__all__ = ["database_info", "format_info"]
