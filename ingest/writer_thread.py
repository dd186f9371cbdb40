"""Writes swept results on a background thread, so the sweep never waits on DuckDB.

The sweep hands each batch of prompt results to :meth:`WriterThread.submit`; a single thread
writes them in order with the store's own write function (one transaction per batch, so a
failed batch leaves nothing of itself behind). The queue is bounded: when the database falls
behind by ``max_pending`` batches, ``submit`` blocks (and counts the wait) rather than holding
ever more results in memory. A write that fails stops all later writes; the error comes back to
the sweeping thread as one :class:`DatabaseError` line at its next ``submit`` or at ``close``.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

from featuregraph.errors import DatabaseError, FeaturegraphError

_STOP = object()


class WriterThread:
    """A bounded queue in front of ``write(batch)``, drained by one thread (see module doc).

    ``wait_s``: seconds ``submit`` spent blocked on a full queue (the sweep waiting on the store);
    ``write_s``: seconds spent in ``write``. Use as a context manager: leaving the block normally
    waits for every queued write and raises a write's error; leaving it by an exception drops
    whatever is still queued (nothing half-written: each batch is its own transaction).
    """

    def __init__(self, write: Callable[[Any], None], max_pending: int = 4, name: str = "featuregraph-writer"):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._drop = False
        self.wait_s = 0.0
        self.write_s = 0.0
        self.batches = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None or self._drop:
                continue  # after a failure (or an abort) nothing more is written
            t = time.perf_counter()
            try:
                self._write(item)
                self.batches += 1
            except BaseException as e:  # noqa: BLE001 - handed to the sweeping thread
                self._error = e
            self.write_s += time.perf_counter() - t

    def _raise(self) -> None:
        e = self._error
        if e is None:
            return
        if isinstance(e, FeaturegraphError):
            raise type(e)(str(e)) from e
        first = (str(e).strip().splitlines() or [""])[0]
        raise DatabaseError(f"writing results to the database failed: {type(e).__name__}: {first}") from e

    def submit(self, batch: Any) -> None:
        """Queue ``batch`` for writing; blocks while ``max_pending`` batches are queued."""
        self._raise()
        t = time.perf_counter()
        self._queue.put(batch)
        self.wait_s += time.perf_counter() - t

    def close(self) -> None:
        """Wait for every queued write; raise the first write error as one line."""
        self._queue.put(_STOP)
        self._thread.join()
        self._raise()

    def abort(self) -> None:
        """Drop queued batches not yet started, wait for the one being written, stop the thread."""
        self._drop = True
        self._queue.put(_STOP)
        self._thread.join()

    def __enter__(self) -> "WriterThread":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
