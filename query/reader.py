"""Opening a database for the dashboard: read-only, for one interaction, and a cache key.

:func:`open_reader` opens the database in the SQL sandbox; while an ingest (single-process or a
distributed merge) holds the lock it opens the ingest's newest snapshot at once
(store/snapshot.py; the connection's ``snapshot_time`` says so), and only a writer that
publishes none (``featuregraph optimize``, say) makes it wait and then raise
:class:`~featuregraph.errors.DatabaseLockedError` (the dashboard says an ingest is writing);
:func:`database_stamp` changes whenever the file does.
"""

from __future__ import annotations

import os
from pathlib import Path

from featuregraph.store.db import LOCK_WAIT_ENV, Database, open_sandbox

# Readers of the dashboard wait this long for a writer's lock before saying an ingest is writing.
DASHBOARD_LOCK_WAIT_S = 2.0


def open_reader(path: str | Path, wait_s: float | None = None) -> Database:
    """Open ``path`` in the SQL sandbox (read-only) for one interaction (close it soon after).

    A locked database with a published snapshot: the snapshot, without waiting. Otherwise waits
    up to ``wait_s`` seconds (default: ``FEATUREGRAPH_LOCK_WAIT``, else 2 s) for a writer's lock;
    if it is still held, raises :class:`DatabaseLockedError` naming the writer.
    """
    if wait_s is None:
        try:
            wait_s = float(os.environ.get(LOCK_WAIT_ENV, DASHBOARD_LOCK_WAIT_S))
        except ValueError:
            wait_s = DASHBOARD_LOCK_WAIT_S
    return open_sandbox(path, wait_s=wait_s)


def database_stamp(path: str | Path) -> tuple[int, int, int]:
    """Changes whenever the database file (or its write-ahead log) changes: a cache key."""
    p = Path(path)
    st = p.stat()
    wal = Path(str(p) + ".wal")
    wal_mtime = wal.stat().st_mtime_ns if wal.exists() else 0
    return (st.st_mtime_ns, st.st_size, wal_mtime)


__all__ = ["DASHBOARD_LOCK_WAIT_S", "database_stamp", "open_reader"]
