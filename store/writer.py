"""Who holds a database's write lock: a small announcement file beside the database.

DuckDB lets one process write a file, and a reader cannot open it while a writer has it
open. An ingest announces itself in ``DB.writer.json`` (process id, host, kind of ingest,
run, progress), so that a reader that cannot get in can say who is writing and for how
long to expect it: a single-process ingest holds the lock for its whole run; a distributed
ingest (``--workers``) only while it merges a batch of shards.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any


def writer_file(db_path: str | Path) -> Path:
    return Path(str(db_path) + ".writer.json")


def _write(path: Path, info: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, default=str))
    os.replace(tmp, path)


class WriterNote:
    """The announcement of one writer; :meth:`update` adds progress to it."""

    def __init__(self, db_path: str | Path, info: dict[str, Any]):
        self.path = writer_file(db_path)
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now().isoformat(" ", "seconds"), **info}

    def update(self, **changes: Any) -> None:
        self.info.update(changes)
        try:
            _write(self.path, self.info)
        except OSError:
            pass  # the note is a courtesy to readers; never fail an ingest over it

    def remove(self) -> None:
        try:
            current = json.loads(self.path.read_text())
            if current.get("pid") == os.getpid() and current.get("host") == socket.gethostname():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_writer(db_path: str | Path) -> dict[str, Any] | None:
    """The announcement of ``db_path``'s writer, or None when there is none or its process is
    gone (a writer on another host is taken to be alive: its process cannot be checked here)."""
    try:
        info = json.loads(writer_file(db_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    pid, host = info.get("pid"), info.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        return None
    return info


def describe_writer(db_path: str | Path) -> str | None:
    """One phrase naming the announced writer of ``db_path``, or None (no note, or a stale one)."""
    info = live_writer(db_path)
    if info is None:
        return None
    pid, host = info.get("pid"), info.get("host")
    what = info.get("what", "a featuregraph writer")
    parts = [f"pid {pid} on {host}", f"since {info.get('since')}"]
    if info.get("run_id") is not None:
        parts.append(f"run {info['run_id']}")
    if info.get("merged") is not None and info.get("n_prompts") is not None:
        parts.append(f"{info['merged']}/{info['n_prompts']} prompts in")
    holds = info.get("holds_lock")
    return f"{what} ({', '.join(parts)})" + (f", which holds the write lock {holds}" if holds else "")


__all__ = ["describe_writer", "live_writer", "writer_file", "WriterNote"]
