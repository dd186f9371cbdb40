"""Readers never wait: the writer publishes consistent snapshots that readers open instead.

DuckDB (2.0 included) lets one process write a database file and refuses every other process,
readers included, while it does: a ``read_only`` connection or ``ATTACH ... (READ_ONLY)`` from
another process fails with "Could not set lock on file" (tested in tests/test_snapshots.py; see
DuckDB's "Concurrency" documentation). So a writer that holds the file for a whole ingest
publishes copies of it beside it, ``DB.snapshot``: after a ``CHECKPOINT`` between two
transactions the file holds exactly the committed state, and a copy of it is a consistent,
complete database. The copy is written to a temporary name and renamed into place, so a
reader opens either the previous snapshot or the new one, never a half-written file; a reader
that has the previous one open keeps reading it (renaming does not disturb an open file).

A reader that finds the database locked opens the newest snapshot at once
(``store.db.connect``), and knows it did (``Database.snapshot_time``). Copying costs time in
proportion to the file, so :class:`SnapshotPublisher` publishes at the start of an ingest, then
after a commit at most every :data:`MIN_INTERVAL_S` seconds and never more often than
:data:`COPY_SHARE` of the elapsed time allows (copy time x 1/COPY_SHARE), and removes the
snapshot when the ingest ends and the database itself is readable again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # store.db imports this module to open snapshots
    from featuregraph.store.db import Database

log = logging.getLogger(__name__)

SNAPSHOT_ENV = "FEATUREGRAPH_SNAPSHOT_EVERY"  # seconds between snapshots; "off": none
MIN_INTERVAL_S = 30.0
COPY_SHARE = 0.1  # at most this share of an ingest's time goes to copying snapshots


def snapshot_path(db_path: str | Path) -> Path:
    """Where the writer of ``db_path`` publishes its snapshots."""
    return Path(str(db_path) + ".snapshot")


def publish_snapshot(db: Database) -> float:
    """Checkpoint ``db`` (a writable file database, between transactions) and publish a copy of
    it as :func:`snapshot_path`. Returns the seconds it took."""
    start = time.perf_counter()
    db.execute("CHECKPOINT")
    target = snapshot_path(db.path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        # In a child process: POSIX drops every lock a process holds on a file as soon as it
        # closes any descriptor of that file, so opening the database here to copy it would
        # silently release DuckDB's write lock. (``--reflink=auto``: a copy-on-write clone,
        # instant, where the file system has them.)
        subprocess.run(["cp", "--reflink=auto", db.path, str(tmp)], check=True, capture_output=True)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    took = time.perf_counter() - start
    log.info("published a snapshot of %s in %.2f s", db.path, took)
    return took


def remove_snapshot(db_path: str | Path) -> None:
    """Remove the published snapshot (readers that have it open keep reading it)."""
    snapshot_path(db_path).unlink(missing_ok=True)


class SnapshotPublisher:
    """Publishes snapshots of a writer's database: :meth:`start`, then :meth:`after_commit`; the writer
    calls :func:`remove_snapshot` once it has closed the database.

    ``every_s``: the least seconds between two snapshots (default: ``FEATUREGRAPH_SNAPSHOT_EVERY``,
    else :data:`MIN_INTERVAL_S`; ``off`` or a database in memory: none at all).
    """

    def __init__(self, db: Database, every_s: float | None = None):
        self.db = db
        self.enabled = db.path != ":memory:" and not db.read_only
        if every_s is None:
            raw = os.environ.get(SNAPSHOT_ENV, "")
            if raw.strip().lower() == "off":
                self.enabled = False
            try:
                every_s = float(raw) if raw.strip() and raw.strip().lower() != "off" else MIN_INTERVAL_S
            except ValueError:
                every_s = MIN_INTERVAL_S
        self.every_s = every_s
        self.last = float("-inf")
        self.last_cost = 0.0
        self.published = 0

    def publish(self) -> None:
        """Publish now (a failure to copy is logged, never raised)."""
        try:
            self.last_cost = publish_snapshot(self.db)
        except (OSError, subprocess.CalledProcessError) as exc:  # a full disk must not fail the ingest
            log.warning("could not publish a snapshot of %s: %s", self.db.path, exc)
            return
        self.last = time.monotonic()
        self.published += 1

    def start(self) -> None:
        if self.enabled:
            self.publish()

    def after_commit(self) -> None:
        """Publish if the interval (and the copy-time budget) has passed since the last one."""
        if not self.enabled:
            return
        wait = max(self.every_s, self.last_cost / COPY_SHARE)
        if time.monotonic() - self.last >= wait:
            self.publish()


__all__ = ["SNAPSHOT_ENV", "SnapshotPublisher", "publish_snapshot", "remove_snapshot", "snapshot_path"]
