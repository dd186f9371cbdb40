"""Opening a database for the dashboard: read-only, for one interaction, and a cache key.

:func:`open_reader` turns "a writer holds the lock" into :class:`DatabaseBusyError` so that the
dashboard can say an ingest is writing; :func:`database_stamp` changes whenever the file does.
"""

from __future__ import annotations

import os
from pathlib import Path

from featuregraph.errors import DatabaseError
from featuregraph.store.db import LOCK_WAIT_ENV, Database, open_database

# Readers of the dashboard wait this long for a writer's lock before saying an ingest is writing.
DASHBOARD_LOCK_WAIT_S = 2.0


class DatabaseBusyError(DatabaseError):
    """Another process (an ingest) holds the database's write lock."""


def open_reader(path: str | Path, wait_s: float | None = None) -> Database:
    """Open ``path`` read-only for one interaction (close it soon after).

    Waits up to ``wait_s`` seconds (default: ``FEATUREGRAPH_LOCK_WAIT``, else 2 s) for a
    writer's lock; if it is still held, raises :class:`DatabaseBusyError` naming the writer.
    """
    if wait_s is None:
        try:
            wait_s = float(os.environ.get(LOCK_WAIT_ENV, DASHBOARD_LOCK_WAIT_S))
        except ValueError:
            wait_s = DASHBOARD_LOCK_WAIT_S
    try:
        return open_database(path, read_only=True, wait_s=wait_s)
    except DatabaseError as exc:
        if "in use by another process" in str(exc):
            raise DatabaseBusyError(str(exc)) from exc
        raise


def database_stamp(path: str | Path) -> tuple[int, int, int]:
    """Changes whenever the database file (or its write-ahead log) changes: a cache key."""
    p = Path(path)
    st = p.stat()
    wal = Path(str(p) + ".wal")
    wal_mtime = wal.stat().st_mtime_ns if wal.exists() else 0
    return (st.st_mtime_ns, st.st_size, wal_mtime)


__all__ = ["DASHBOARD_LOCK_WAIT_S", "DatabaseBusyError", "database_stamp", "open_reader"]
