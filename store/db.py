"""The one place featuregraph executes SQL.

Every statement goes through :meth:`Database.execute`, which logs it at debug level and
turns DuckDB's exceptions into one-line :class:`DatabaseError` messages that name the
statement. Values always travel as parameters; identifiers only come from the fixed
schema (see :data:`SCHEMA_TABLES`).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import duckdb
import pyarrow as pa

from featuregraph.errors import (
    DatabaseError,
    DatabaseLockedError,
    FeaturegraphError,
    QueryTimeoutError,
    ReadOnlyError,
)
from featuregraph.store.tables import TABLE_NAMES

log = logging.getLogger(__name__)

# Tables bulk inserts may target (every table of the spec): identifiers are never taken from user input.
SCHEMA_TABLES = frozenset(TABLE_NAMES)

_BATCH_VIEW = "__featuregraph_batch"
_BATCH_ROWS = 8192


def quote_identifier(name: str) -> str:
    """Quote an SQL identifier for DuckDB (double quotes, embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _short(sql: str) -> str:
    statement = " ".join(sql.split())
    return statement if len(statement) <= 160 else statement[:157] + "..."


def _statement_error(exc: duckdb.Error, sql: str) -> FeaturegraphError:
    # DuckDB raises PermissionException where its configuration forbids an access: in a sandbox
    # (open_sandbox), a statement reaching outside the database. A refusal, not a failure.
    if isinstance(exc, duckdb.PermissionException):
        return ReadOnlyError(
            f"the SQL sandbox reaches nothing outside the database: {_first_line(exc)} [in: {_short(sql)}]"
        )
    return DatabaseError(f"{_first_line(exc)} [in: {_short(sql)}]")


@dataclass(frozen=True)
class QueryLimits:
    """Guard rails for one read query: a time limit in seconds and a row cap (None: no limit)."""

    time_limit_s: float | None = None
    max_rows: int | None = None


@dataclass(frozen=True)
class QueryResult:
    """Rows of a read query; ``truncated`` when the row cap cut it short."""

    table: pa.Table
    truncated: bool


class Database:
    """A DuckDB connection to a featuregraph database file (or ``:memory:``).

    Open it with :func:`open_database`, which checks the schema version. A writable
    connection takes DuckDB's single-writer lock on the file; readers should pass
    ``read_only=True`` so that any number of them can share it. SQL typed by a user runs only
    on a connection from :func:`open_sandbox` (``sandboxed``).
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: str,
        read_only: bool,
        sandboxed: bool = False,
        snapshot_time: float | None = None,
    ):
        self.con = con
        self.path = path
        self.read_only = read_only
        self.sandboxed = sandboxed  # opened by open_sandbox: fit for SQL typed by a user
        # Set when a writer held the file and this reads its published snapshot (store/snapshot.py):
        # the snapshot's time (seconds since the epoch); the data are as of then.
        self.snapshot_time = snapshot_time

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        """Run one statement (or a script without parameters) and return the cursor."""
        log.debug("sql: %s params=%r", sql.strip(), params)
        try:
            if params is None:
                return self.con.execute(sql)
            return self.con.execute(sql, params)
        except duckdb.Error as exc:
            raise _statement_error(exc, sql) from exc

    def fetchall(self, sql: str, params: Any = None) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Any = None) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def arrow(self, sql: str, params: Any = None) -> pa.Table:
        return self.execute(sql, params).to_arrow_table()

    def query(self, sql: str, params: Any = None, limits: QueryLimits | None = None) -> QueryResult:
        """Run one read query under ``limits``, streaming at most ``limits.max_rows`` rows.

        The query behind a dashboard or a shared entry point goes through here: past the time
        limit DuckDB is interrupted and :class:`QueryTimeoutError` raised; past the row cap
        the rest is dropped unread and the result marked ``truncated``.
        """
        limits = limits or QueryLimits()
        log.debug("sql: %s params=%r limits=%r", sql.strip(), params, limits)
        timer = None
        if limits.time_limit_s is not None:
            timer = threading.Timer(limits.time_limit_s, self.con.interrupt)
            timer.start()
        batches: list[pa.RecordBatch] = []
        rows, truncated = 0, False
        try:
            self.con.abort()  # drop what a fetchone() left unread: DuckDB runs one result at a time
            reader = self.con.sql(sql, params=params).to_arrow_reader(_BATCH_ROWS)
            try:
                for batch in reader:
                    if limits.max_rows is not None and rows + batch.num_rows > limits.max_rows:
                        batches.append(batch.slice(0, limits.max_rows - rows))
                        truncated = True
                        break
                    batches.append(batch)
                    rows += batch.num_rows
                schema = reader.schema
            finally:
                reader.close()
        except duckdb.InterruptException as exc:
            raise QueryTimeoutError(
                f"query stopped at its time limit of {limits.time_limit_s:g} s [in: {_short(sql)}]"
            ) from exc
        except duckdb.Error as exc:
            raise _statement_error(exc, sql) from exc
        finally:
            if timer is not None:
                timer.cancel()
        return QueryResult(pa.Table.from_batches(batches, schema=schema), truncated)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        """Bulk-insert an Arrow table whose columns match ``table``'s, by name."""
        if table not in SCHEMA_TABLES:
            raise DatabaseError(f"refusing to insert into unknown table {table!r}")
        if data.num_rows == 0:
            return
        columns = ", ".join(quote_identifier(c) for c in data.column_names)
        self.con.register(_BATCH_VIEW, data)
        try:
            self.execute(
                f"INSERT INTO {quote_identifier(table)} ({columns}) "
                f"SELECT {columns} FROM {_BATCH_VIEW}"
            )
        finally:
            self.con.unregister(_BATCH_VIEW)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside land together or not at all."""
        self.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        else:
            self.execute("COMMIT")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Database":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


LOCK_WAIT_ENV = "FEATUREGRAPH_LOCK_WAIT"
DEFAULT_READ_WAIT_S = 15.0


def _lock_wait(read_only: bool, wait_s: float | None) -> float:
    """Readers wait for a writer's lock by default (a distributed ingest's merger holds it for
    seconds at a time); writers do not, unless asked."""
    if wait_s is not None:
        return wait_s
    if not read_only:
        return 0.0
    try:
        return float(os.environ.get(LOCK_WAIT_ENV, DEFAULT_READ_WAIT_S))
    except ValueError:
        return DEFAULT_READ_WAIT_S


def _lock_holder(target: str, msg: str) -> str:
    from featuregraph.store.writer import describe_writer

    who = describe_writer(target)
    if who:
        return who
    m = re.search(r"held in (.+?) \(PID (\d+)\)", msg)
    return f"process {m.group(2)} ({m.group(1)})" if m else msg


def _wait_for_lock(
    target: str, wait_s: float, opener: Callable[[], duckdb.DuckDBPyConnection]
) -> duckdb.DuckDBPyConnection:
    """``opener()``, retried while another process holds a conflicting lock for up to ``wait_s``.

    The one place that reads DuckDB's lock message: callers get :class:`DatabaseLockedError`.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        try:
            return opener()
        except duckdb.Error as exc:
            msg = _first_line(exc)
            if "lock" not in msg.lower():
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f"; gave up after waiting {wait_s:g} s" if wait_s > 0 else ""
                raise DatabaseLockedError(
                    f"{target} is in use by another process (DuckDB allows one writer, or readers "
                    f"only): {_lock_holder(target, msg)}{waited}"
                ) from exc
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.5)


def _open_plain(target: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(target, read_only=read_only)
    # DuckDB's own progress bar would write over ours (and into piped output).
    con.execute("SET enable_progress_bar = false")
    return con


# Set, in this order, on a sandbox's connection once its database is attached.
# enable_external_access = false refuses every file and network access DuckDB offers (file
# functions and globs, COPY, EXPORT, ATTACH of another file, INSTALL/LOAD, secrets, Python
# replacement scans) except to the database already attached; lock_configuration, last,
# refuses every later SET, RESET or PRAGMA that would change a setting, these included.
SANDBOX_SETTINGS = (
    ("enable_progress_bar", False),
    ("autoinstall_known_extensions", False),
    ("autoload_known_extensions", False),
    ("allow_community_extensions", False),
    ("enable_external_access", False),
    ("lock_configuration", True),
)
ATTACH_READ_ONLY = "ATTACH ? AS {alias} (READ_ONLY)"
_RESERVED_CATALOGS = frozenset({"memory", "system", "temp", "main"})


def _open_sandboxed(target: str, alias_of: str | None = None) -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB instance with ``target`` attached read-only, then locked down.

    A private instance (not ``duckdb.connect(target)``) because DuckDB shares one instance per
    file within a process and its settings are instance-wide: locking it would lock every
    other connection of this process to the same file, and a file already open with other
    settings could not be opened sandboxed at all. The file is attached before external access
    is switched off (DuckDB then keeps allowing that one file and its write-ahead log).
    """
    alias = Path(alias_of or target).stem
    if alias.lower() in _RESERVED_CATALOGS:
        alias = f"featuregraph_{alias}"
    con = duckdb.connect(":memory:")
    try:
        con.execute(ATTACH_READ_ONLY.format(alias=quote_identifier(alias)), [target])
        con.execute(f"USE {quote_identifier(alias)}")
        con.execute("DETACH memory")  # nothing writable left in the instance
        # Spill files of large sorts go beside the database, as for a plain connection.
        con.execute("SET temp_directory = ?", [target + ".tmp"])
        for name, value in SANDBOX_SETTINGS:
            con.execute(f"SET {name} = {str(value).lower()}")
    except BaseException:
        con.close()
        raise
    return con


def connect(
    path: str | Path, read_only: bool = False, wait_s: float | None = None, sandboxed: bool = False
) -> Database:
    """Open the DuckDB file without looking at its schema; see :func:`open_database`.

    While another process holds a conflicting lock, retry for up to ``wait_s`` seconds
    (default: ``FEATUREGRAPH_LOCK_WAIT`` or 15 s for readers, no wait for writers), then
    raise a one-line :class:`DatabaseLockedError` naming the process that holds it.
    ``sandboxed`` (read-only files only): see :func:`open_sandbox`.
    """
    target = str(path)
    if sandboxed and (not read_only or target == ":memory:"):
        raise DatabaseError("a sandboxed connection opens an existing database file, read-only")
    if target != ":memory:":
        p = Path(target)
        if read_only and not p.exists():
            raise DatabaseError(f"no database at {target}")
        if p.exists() and p.is_dir():
            raise DatabaseError(f"{target} is a directory, not a database file")
        if not read_only:
            p.parent.mkdir(parents=True, exist_ok=True)
    opener = partial(_open_sandboxed, target) if sandboxed else partial(_open_plain, target, read_only)
    try:
        if read_only and target != ":memory:":
            # A writer that holds the file publishes snapshots: read the newest at once.
            try:
                con = _wait_for_lock(target, 0.0, opener)
            except DatabaseLockedError:
                snap = _open_snapshot(target, sandboxed)
                if snap is not None:
                    return snap
        con = _wait_for_lock(target, _lock_wait(read_only, wait_s), opener)
    except duckdb.Error as exc:
        msg = _first_line(exc)
        raise DatabaseError(f"{target} is not a readable DuckDB database (corrupt?): {msg}") from exc
    return Database(con, target, read_only, sandboxed=sandboxed)


def _open_snapshot(target: str, sandboxed: bool) -> Database | None:
    """The live writer's published snapshot of ``target``, open read-only, or None if there is none."""
    from featuregraph.store.snapshot import current_snapshot

    # Its time is taken before the open: a snapshot published in between is only newer.
    found = current_snapshot(target)
    if found is None:
        return None
    snap, taken = found
    opener = partial(_open_sandboxed, str(snap), target) if sandboxed else partial(_open_plain, str(snap), True)
    try:
        con = opener()
    except duckdb.Error as exc:  # removed under us: the writer is done, or there is none to read
        log.info("snapshot %s not readable: %s", snap, _first_line(exc))
        return None
    return Database(con, target, True, sandboxed=sandboxed, snapshot_time=taken)


def _checked(db: Database) -> Database:
    from featuregraph.store.migrate import ensure_schema

    try:
        ensure_schema(db)
    except BaseException:
        db.close()
        raise
    return db


def open_database(path: str | Path, read_only: bool = False, wait_s: float | None = None) -> Database:
    """Open a featuregraph database, creating or upgrading its schema when writable.

    Raises :class:`DatabaseError` for a corrupt file, a DuckDB file that is not a
    featuregraph database, a schema newer than this featuregraph, or (read-only) a
    schema older than this featuregraph.
    """
    return _checked(connect(path, read_only=read_only, wait_s=wait_s))


def open_sandbox(path: str | Path, wait_s: float | None = None) -> Database:
    """Open a featuregraph database read-only for SQL typed by a user: the sandbox.

    The connection reaches nothing but this one database: DuckDB itself refuses to read, list
    or write any other file (``read_text``, ``read_csv``, ``glob``, ``COPY``, ``EXPORT``),
    to attach another database, to change a setting (``SET``, ``RESET``, ``PRAGMA``) and to
    install or load an extension (see :data:`SANDBOX_SETTINGS`). The schema's macros and views
    work as usual. Waits for a writer's lock like :func:`open_database` with ``read_only``.
    """
    return _checked(connect(path, read_only=True, wait_s=wait_s, sandboxed=True))
