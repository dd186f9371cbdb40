"""Numbered, append-only SQL migrations (``migrations/NNNN_name.sql``).

Each file runs in its own transaction together with its row in ``schema_migrations``,
so a database is always at exactly one recorded version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from featuregraph.errors import DatabaseError
from store.db import Database

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp
)
"""
COUNT_USER_TABLES = """
SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() AND NOT internal
"""
HAS_MIGRATIONS_TABLE = """
SELECT count(*) FROM duckdb_tables()
WHERE database_name = current_database() AND table_name = 'schema_migrations'
"""
CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name) VALUES (?, ?)"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migrations this featuregraph ships, in version order."""
    found = []
    for entry in resources.files("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if versions != list(range(1, len(found) + 1)):
        raise DatabaseError(f"migrations are not numbered 1..n without gaps: {versions}")
    return found


def latest_version() -> int:
    return len(available_migrations())


def current_version(db: Database) -> int:
    """The database's schema version: 0 for an empty database."""
    if db.fetchone(HAS_MIGRATIONS_TABLE)[0] == 0:
        if db.fetchone(COUNT_USER_TABLES)[0] > 0:
            raise DatabaseError(f"{db.path} is a DuckDB database but not a featuregraph one")
        return 0
    return int(db.fetchone(CURRENT_VERSION)[0])


def ensure_schema(db: Database) -> int:
    """Bring a writable database up to the latest schema; check a read-only one.

    Returns the schema version the database ends at.
    """
    migrations = available_migrations()
    latest = len(migrations)
    version = current_version(db)
    if version > latest:
        raise DatabaseError(
            f"{db.path} has schema version {version}, newer than this featuregraph knows "
            f"({latest}); upgrade featuregraph to read it"
        )
    if version == latest:
        return version
    if db.read_only:
        raise DatabaseError(
            f"{db.path} has schema version {version}, older than this featuregraph's {latest}; "
            "open it once for writing (e.g. `featuregraph migrate DB`) to upgrade it"
        )
    db.execute(CREATE_MIGRATIONS_TABLE)
    for mig in migrations[version:]:
        with db.transaction():
            db.execute(mig.sql)
            db.execute(RECORD_MIGRATION, [mig.version, f"{mig.version:04d}_{mig.name}"])
    return latest
