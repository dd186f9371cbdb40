"""A SQLAlchemy engine on a featuregraph database, for notebooks: ``pandas.read_sql``,
jupysql's ``%sql``. The database's SQL helpers (``recurring_paths``, ``prompt_graph``, ...) are
macros stored in the file, so they work through any connection, this one included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featuregraph.store.db import open_database


def sqlalchemy_url(path: str | Path) -> str:
    """The ``duckdb:///`` URL (duckdb-engine) of the database at ``path``."""
    return f"duckdb:///{Path(path).resolve()}"


def sqlalchemy_engine(path: str | Path, read_only: bool = True) -> Any:
    """A SQLAlchemy engine on the database at ``path`` (read-only unless asked).

    The file is checked first (it exists, is a featuregraph database, its schema is this
    featuregraph's), so a wrong path fails in one line rather than at the first query.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    open_database(path, read_only=True).close()
    # No pool: each query's connection closes when it is done, so the file is not held open
    # between queries (an ingest could not take the write lock, and DuckDB refuses a second
    # connection in this process with other settings, e.g. featuregraph's own).
    return create_engine(sqlalchemy_url(path), connect_args={"read_only": read_only}, poolclass=NullPool)


__all__ = ["sqlalchemy_engine", "sqlalchemy_url"]
