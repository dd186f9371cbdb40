"""The one place featuregraph executes SQL.

Every statement goes through :meth:`Database.execute`, which logs it at debug level and
turns DuckDB's exceptions into one-line :class:`DatabaseError` messages that name the
statement. Values always travel as parameters; identifiers only come from the fixed
schema (see :data:`SCHEMA_TABLES`).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pyarrow as pa

from featuregraph.errors import DatabaseError

log = logging.getLogger(__name__)

# Tables bulk inserts may target: identifiers are never taken from user input.
SCHEMA_TABLES = frozenset(
    {
        "runs",
        "run_saes",
        "prompts",
        "tokens",
        "top_next_tokens",
        "vocab",
        "activations",
        "ablations",
        "edges",
        "logit_effects",
    }
)

_BATCH_VIEW = "__featuregraph_batch"


def quote_identifier(name: str) -> str:
    """Quote an SQL identifier for DuckDB (double quotes, embedded quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Database:
    """A DuckDB connection to a featuregraph database file (or ``:memory:``).

    Open it with :func:`open_database`, which checks the schema version. A writable
    connection takes DuckDB's single-writer lock on the file; readers should pass
    ``read_only=True`` so that any number of them can share it.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, read_only: bool):
        self.con = con
        self.path = path
        self.read_only = read_only

    def execute(self, sql: str, params: Any = None) -> duckdb.DuckDBPyConnection:
        """Run one statement (or a script without parameters) and return the cursor."""
        log.debug("sql: %s params=%r", sql.strip(), params)
        try:
            if params is None:
                return self.con.execute(sql)
            return self.con.execute(sql, params)
        except duckdb.Error as exc:
            statement = " ".join(sql.split())
            if len(statement) > 160:
                statement = statement[:157] + "..."
            raise DatabaseError(f"{_first_line(exc)} [in: {statement}]") from exc

    def fetchall(self, sql: str, params: Any = None) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Any = None) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def arrow(self, sql: str, params: Any = None) -> pa.Table:
        return self.execute(sql, params).to_arrow_table()

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


def connect(path: str | Path, read_only: bool = False) -> Database:
    """Open the DuckDB file without looking at its schema; see :func:`open_database`."""
    target = str(path)
    if target != ":memory:":
        p = Path(target)
        if read_only and not p.exists():
            raise DatabaseError(f"no database at {target}")
        if p.exists() and p.is_dir():
            raise DatabaseError(f"{target} is a directory, not a database file")
        if not read_only:
            p.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(target, read_only=read_only)
    except duckdb.Error as exc:
        msg = _first_line(exc)
        if "lock" in msg.lower():
            raise DatabaseError(
                f"{target} is in use by another process (DuckDB allows one writer, or readers "
                f"only): {msg}"
            ) from exc
        raise DatabaseError(f"{target} is not a readable DuckDB database (corrupt?): {msg}") from exc
    return Database(con, target, read_only)


def open_database(path: str | Path, read_only: bool = False) -> Database:
    """Open a featuregraph database, creating or upgrading its schema when writable.

    Raises :class:`DatabaseError` for a corrupt file, a DuckDB file that is not a
    featuregraph database, a schema newer than this featuregraph, or (read-only) a
    schema older than this featuregraph.
    """
    from store.migrate import ensure_schema

    db = connect(path, read_only=read_only)
    try:
        ensure_schema(db)
    except BaseException:
        db.close()
        raise
    return db
