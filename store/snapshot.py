"""Readers never wait: the writer publishes consistent snapshots that readers open instead.

DuckDB (2.0 included) lets one process write a database file and refuses every other process,
readers included, while it does: a ``read_only`` connection or ``ATTACH ... (READ_ONLY)`` from
another process fails with "Could not set lock on file" (tested in tests/test_snapshots.py; see
DuckDB's "Concurrency" documentation). So a writer (an ingest, which holds the file for its whole
run; the distributed merger, which holds it while it merges; ``import-graph``) publishes copies
of it beside it, ``DB.snapshot``: after a ``CHECKPOINT`` between two
transactions the file holds exactly the committed state, and a copy of it is a consistent,
complete database. The copy is written to a temporary name and renamed into place, so a
reader opens either the previous snapshot or the new one, never a half-written file; a reader
that has the previous one open keeps reading it (renaming does not disturb an open file).

A reader that finds the database locked opens the newest snapshot at once
(``store.db.connect``), and knows it did (``Database.snapshot_time``). Copying costs time in
proportion to the file, so :class:`SnapshotPublisher` publishes at the start of an ingest, then
after a commit at most every :data:`MIN_INTERVAL_S` seconds and never more often than
:data:`COPY_SHARE` of the elapsed time allows: the copies so far plus the next (estimated at the
last one's cost) must fit in that share of the time since the writer started, so only the start's
copy, and a copy slower than the one before by its difference, can take the total past it. Every
writer runs in one :func:`writer_session`, which removes the snapshot when the writer is done
with the file, finished or failed, and readers take a snapshot only from the live writer that
published it (:func:`current_snapshot`).
"""

from __future__ import annotations

import glob
import logging
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from featuregraph.store.writer import WriterNote, live_writer

if TYPE_CHECKING:  # store.db imports this module to open snapshots
    from featuregraph.store.db import Database

log = logging.getLogger(__name__)

SNAPSHOT_ENV = "FEATUREGRAPH_SNAPSHOT_EVERY"  # seconds between snapshots; "off": none
MIN_INTERVAL_S = 30.0
COPY_SHARE = 0.1  # at most this share of an ingest's time goes to copying snapshots
_clock = time.monotonic  # the publisher's clock (tests run it faster)


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
    """Publishes snapshots of one writer's database file, across any number of connections to it
    (the distributed merger opens the file for each merge): :meth:`start` once the writer holds the
    file, :meth:`after_commit` after each of its commits. Made by :func:`writer_session`, which
    announces the writer (:attr:`note`) and removes the snapshot when the writer is done.

    ``every_s``: the least seconds between two snapshots (default: ``FEATUREGRAPH_SNAPSHOT_EVERY``,
    else :data:`MIN_INTERVAL_S`; ``off`` or a database in memory: none at all).
    """

    def __init__(self, db_path: str | Path, note: WriterNote, every_s: float | None = None):
        self.db_path = str(db_path)
        self.note = note
        self.enabled = self.db_path != ":memory:"
        if every_s is None:
            raw = os.environ.get(SNAPSHOT_ENV, "").strip().lower()
            if raw == "off":
                self.enabled = False
            try:
                every_s = float(raw) if raw and raw != "off" else MIN_INTERVAL_S
            except ValueError:
                every_s = MIN_INTERVAL_S
        self.every_s = every_s
        self.last = float("-inf")
        self.last_cost = 0.0
        self.published = 0
        self.seconds = 0.0  # spent publishing, in all
        self.started = False  # the writer held the file: the snapshot there is this session's
        self.started_at = _clock()

    def publish(self, db: Database) -> None:
        """Publish now (``db``: the writer's open connection, between transactions; a failure to
        copy is logged, never raised)."""
        if not self.enabled or db.read_only:
            return
        try:
            self.last_cost = publish_snapshot(db)
        except (OSError, subprocess.CalledProcessError) as exc:  # a full disk must not fail the ingest
            log.warning("could not publish a snapshot of %s: %s", self.db_path, exc)
            return
        self.last = _clock()
        self.published += 1
        self.seconds += self.last_cost

    def announce(self, **changes: Any) -> None:
        """Add ``changes`` (run, progress) to the writer's note ``DB.writer.json`` and write it."""
        if self.db_path != ":memory:":
            self.note.update(**changes)

    def start(self, db: Database) -> None:
        """The writer holds the file (``db``): announce it in ``DB.writer.json``, clear what a killed
        writer left, publish the first snapshot."""
        if self.db_path == ":memory:":
            return
        self.started = True
        self.started_at = _clock()
        self.note.update()
        _remove_leftover_copies(self.db_path)
        self.publish(db)

    def after_commit(self, db: Database) -> None:
        """Publish if the interval has passed since the last snapshot and the copy-time budget allows."""
        if not self.enabled:
            return
        now = _clock()
        if now - self.last < self.every_s:
            return
        # A budget over the whole session, the start's copy included (a wait of ten copy times after
        # each copy overshot it whenever a copy took longer than the one before): the copies so far
        # plus the next, estimated at the last one's cost, within COPY_SHARE of the time since start.
        if self.seconds + self.last_cost <= COPY_SHARE * (now - self.started_at):
            self.publish(db)


def _remove_leftover_copies(db_path: str) -> None:
    """Temporary copies of a writer killed mid-copy (each as large as the database). Only the
    writer holding the file publishes, so none of them is being renamed into place."""
    target = snapshot_path(db_path)
    for tmp in target.parent.glob(f"{glob.escape(target.name)}.*.tmp"):
        if tmp.name != f"{target.name}.{os.getpid()}.tmp":
            tmp.unlink(missing_ok=True)


@contextmanager
def writer_session(db_path: str | Path, note_info: dict[str, Any], db: Database | None = None) -> Iterator[SnapshotPublisher]:
    """A writer's session on ``db_path``: yields its :class:`SnapshotPublisher` (call
    :meth:`~SnapshotPublisher.start` once the database is open and the writer holds it), whose
    ``note`` announces the writer (``note_info``: what it is, how it holds the lock).

    On the way out, however the block ends (an error too): closes ``db`` (a writer that keeps one
    connection for the whole session passes it; one that reopens the file, like the distributed
    merger, closes its own before leaving), then removes the snapshot, then the note, in that
    order, so readers go back to the database itself once the writer lets go of it, and no snapshot
    outlives its writer. (A writer killed with SIGKILL leaves both: readers ignore a snapshot whose
    writer is gone, see :func:`current_snapshot`, and the next writer's :meth:`start` replaces it.)
    """
    # The session's start in seconds since the epoch: readers on any host and time zone compare it.
    snapshots = SnapshotPublisher(db_path, WriterNote(db_path, {**note_info, "session_start": time.time()}))
    if db is not None:
        snapshots.announce()  # it holds the file already: say who does, before start()
    try:
        yield snapshots
    finally:
        try:
            if db is not None:
                db.close()
        finally:
            if snapshots.started:  # not another writer's, when this one never got the file
                remove_snapshot(db_path)
            snapshots.note.remove()


def current_snapshot(db_path: str | Path) -> tuple[Path, float] | None:
    """The snapshot of ``db_path`` and its time (seconds since the epoch) if a writer that is still
    alive published it during its session; None otherwise (no snapshot, or one left by a killed
    writer: it may be far behind, and whoever holds the file now is not the writer that made it)."""
    snap = snapshot_path(db_path)
    try:
        taken = snap.stat().st_mtime
    except OSError:
        return None
    writer = live_writer(db_path)
    if writer is None:
        return None
    since = writer.get("session_start")
    if not isinstance(since, (int, float)):
        return None  # not a writer session's note: its snapshot is not this writer's
    return (snap, taken) if taken >= since - 1.0 else None  # a second of slack for coarse file times


__all__ = [
    "SNAPSHOT_ENV", "SnapshotPublisher", "current_snapshot", "publish_snapshot", "remove_snapshot", "snapshot_path",
    "writer_session",
]
