"""Persistence: the DuckDB schema, its migrations, the connection wrapper and the writers."""

from featuregraph.store.db import Database, open_database

__all__ = ["Database", "open_database"]
