"""Where the dashboard's data comes from: the query layer, through a short-lived read-only
connection and a cache.

Each script run (one interaction) opens the database read-only at most once, on its first
cache miss, and closes it when the run ends (:func:`reader_scope`), so the dashboard never
keeps an ingest from taking the write lock for longer than a page takes to draw. Results are
cached under the database file's modification stamp: a new ingest commit makes them stale.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import streamlit as st

from featuregraph.dashboard.launch import DB_ENV
from featuregraph.errors import DatabaseError
from featuregraph.query import api, dfa, features, graphs, noise, overview, prompts, readonly
from featuregraph.query.reader import database_stamp, open_reader
from featuregraph.query.rows import Truncation, with_cut
from featuregraph.store.db import Database, QueryLimits

LIMITS = api.DASHBOARD_LIMITS
log = logging.getLogger(__name__)

# What the pages may ask for: name -> function(db, *args, limits=..., **kwargs).
QUERIES: dict[str, Callable[..., Any]] = {
    "prompt_graph": api.prompt_graph,
    "recurring_paths": api.recurring_paths,
    "tag_specific_paths": api.tag_specific_paths,
    "path_prompts": api.path_prompts,
    "feature_edges": api.feature_edges,
    "feature_logits": api.feature_logits,
    "top_contexts": api.top_contexts,
    **{
        name: getattr(module, name)
        for module in (overview, prompts, features, noise, graphs, dfa)
        for name in module.__all__
        if callable(getattr(module, name))
    },
    "console_sql": readonly.console_sql,
}
UNLIMITED = {"row_counts", "schema_version", "longest_paths", "neuronpedia_url"}


def database_path() -> Path:
    """The database this dashboard shows: ``--db PATH`` after the script's ``--``, else $FEATUREGRAPH_DB."""
    argv = sys.argv[1:]
    if "--db" in argv and argv.index("--db") + 1 < len(argv):
        return Path(argv[argv.index("--db") + 1])
    value = os.environ.get(DB_ENV)
    if not value:
        raise DatabaseError(
            f"no database given: start the dashboard with `featuregraph dashboard DB` (or set {DB_ENV})"
        )
    return Path(value)


class _Scope(threading.local):
    path: Path | None = None
    db: Database | None = None
    cuts: tuple[tuple[str, Truncation], ...] = ()


_scope = _Scope()


@contextmanager
def reader_scope(path: Path) -> Iterator[None]:
    """For one script run: open the database on first use, close it at the end."""
    _scope.path, _scope.db, _scope.cuts = path, None, ()
    try:
        yield
    finally:
        if _scope.db is not None:
            _scope.db.close()
        _scope.path, _scope.db = None, None


def _db() -> Database:
    if _scope.db is None:
        if _scope.path is None:
            raise RuntimeError("query outside reader_scope")
        _scope.db = open_reader(_scope.path)
    return _scope.db


def snapshot_note() -> str | None:
    """A line saying the page shows an ingest's snapshot (store/snapshot.py), or None."""
    db = _scope.db
    if db is None or db.snapshot_time is None:
        return None
    taken = datetime.fromtimestamp(db.snapshot_time).strftime("%H:%M:%S")
    return f"An ingest is writing to this database: showing its consistent snapshot of {taken}."


@st.cache_data(max_entries=512, show_spinner=False)
def _cached(
    path: str, stamp: tuple, limits: tuple, name: str, args: tuple, kwargs: tuple
) -> tuple[Any, Truncation | None]:
    """(the query's result, how the row cap cut it); ``limits`` is part of the cache key."""
    fn = QUERIES[name]
    if name in UNLIMITED:
        return fn(_db(), *args, **dict(kwargs)), None
    return with_cut(fn, _db(), *args, **dict(kwargs), limits=QueryLimits(*limits))


def stamp() -> tuple:
    path = _scope.path
    if path is None:
        raise RuntimeError("query outside reader_scope")
    if not path.exists():
        raise DatabaseError(f"no database at {path}")
    return database_stamp(path)


def load(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run query ``name`` of :data:`QUERIES` (cached while the database file is unchanged).

    A result cut at the row cap is remembered for this script run (:func:`cuts`)."""
    start = time.perf_counter()
    limits = (LIMITS.time_limit_s, LIMITS.max_rows)
    result, cut = _cached(str(_scope.path), stamp(), limits, name, args, tuple(sorted(kwargs.items())))
    if cut is not None:
        _scope.cuts = (*_scope.cuts, (name, cut))
    log.debug("%s%r: %.3f s", name, args, time.perf_counter() - start)
    return result


def cuts() -> list[tuple[str, Truncation]]:
    """The results of this script run cut at the row cap so far: (query name, truncation)."""
    return list(_scope.cuts)


def load_fresh(name: str, *args: Any, limits: QueryLimits | None = None, **kwargs: Any) -> Any:
    """Run query ``name`` without the cache (the SQL console)."""
    stamp()
    return QUERIES[name](_db(), *args, limits=limits or LIMITS, **kwargs)


__all__ = ["DB_ENV", "QUERIES", "cuts", "database_path", "load", "load_fresh", "reader_scope", "stamp"]
