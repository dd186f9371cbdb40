"""``featuregraph sql``: any read query against a database, opened in the SQL sandbox.

Two locks: the database is opened by :func:`store.db.open_sandbox` (read-only, and DuckDB
itself refuses any file, other database, setting or extension), and only one SELECT (or
EXPLAIN of one) is accepted. Refusals are one-line :class:`ReadOnlyError`\\ s; the query runs
under :class:`store.db.QueryLimits`. The dashboard's SQL console goes through the same two.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import polars as pl

from featuregraph.errors import DatabaseError, InputError, ReadOnlyError
from featuregraph.query.rows import Truncation, fetch_rows
from featuregraph.store.db import Database, QueryLimits, open_sandbox

_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALYZE\s+)?", re.IGNORECASE)


def _statement_types(db: Database, sql: str) -> list[str]:
    try:
        return [s.type.name for s in db.con.extract_statements(sql)]
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatabaseError(first) from exc


def check_read_only(db: Database, sql: str) -> None:
    """Refuse anything but a single SELECT, or EXPLAIN [ANALYZE] of one, and any connection
    that is not a sandbox (:func:`store.db.open_sandbox`): user SQL runs only there."""
    if not db.sandboxed:
        raise DatabaseError("SQL typed by a user runs only on a sandboxed connection (store.db.open_sandbox)")
    types = _statement_types(db, sql)
    if not types:
        raise InputError("no SQL statement given")
    if len(types) > 1:
        raise ReadOnlyError(f"one statement at a time, got {len(types)}")
    kind = types[0]
    if kind == "EXPLAIN":
        inner = _statement_types(db, _EXPLAIN.sub("", sql, count=1))
        if inner == ["SELECT"]:
            return
        kind = f"EXPLAIN of {inner[0] if inner else 'nothing'}"
    if kind != "SELECT":
        raise ReadOnlyError(
            f"featuregraph sql is read-only: {kind} statements are refused (only SELECT and EXPLAIN SELECT run)"
        )


def run_sql(
    path: str | Path, sql: str, params: list | dict | None = None, limits: QueryLimits | None = None
) -> tuple[pl.DataFrame, Truncation | None]:
    """Run one read query on the database at ``path`` (opened in the sandbox): (frame, how the
    row cap cut it or None)."""
    with open_sandbox(path) as db:
        check_read_only(db, sql)
        rows = fetch_rows(db, sql, params, limits)
    return rows.frame, rows.truncation


def console_sql(
    db: Database, sql: str, limits: QueryLimits | None = None
) -> tuple[pl.DataFrame, Truncation | None]:
    """One read query typed by a user (a single SELECT or EXPLAIN of one, else
    :class:`featuregraph.errors.ReadOnlyError`) under ``limits``: (frame, how the row cap cut
    it or None)."""
    check_read_only(db, sql)
    rows = fetch_rows(db, sql, None, limits)
    return rows.frame, rows.truncation


__all__ = ["check_read_only", "console_sql", "run_sql"]
