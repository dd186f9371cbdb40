"""Numbered, append-only SQL migrations (``migrations/NNNN_name.sql``).

Each file runs in its own transaction together with its row in ``schema_migrations``,
so a database is always at exactly one recorded version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from featuregraph.errors import DatabaseError

if TYPE_CHECKING:  # annotations only: store.db imports this module to migrate on open
    from featuregraph.store.db import Database

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
APPLIED_VERSIONS = "SELECT version FROM schema_migrations"
RECORD_MIGRATION = "INSERT INTO schema_migrations (version, name) VALUES (?, ?)"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migrations this featuregraph ships, in version order."""
    found = []
    for entry in resources.files("featuregraph.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise DatabaseError(f"two migrations share a version number: {versions}")
    return found


def latest_version() -> int:
    return max((m.version for m in available_migrations()), default=0)


def applied_versions(db: Database) -> set[int]:
    """Versions recorded in the database (empty for an empty database)."""
    if db.fetchone(HAS_MIGRATIONS_TABLE)[0] == 0:
        if db.fetchone(COUNT_USER_TABLES)[0] > 0:
            raise DatabaseError(f"{db.path} is a DuckDB database but not a featuregraph one")
        return set()
    return {int(r[0]) for r in db.fetchall(APPLIED_VERSIONS)}


def current_version(db: Database) -> int:
    """The database's schema version (its newest applied migration): 0 for an empty database."""
    return max(applied_versions(db), default=0)


def ensure_schema(db: Database) -> int:
    """Apply every migration the database lacks (writable), or check that none is lacking
    (read-only). A database with a migration this featuregraph does not know is refused.

    Returns the schema version the database ends at.
    """
    migrations = available_migrations()
    applied = applied_versions(db)
    unknown = applied - {m.version for m in migrations}
    if unknown:
        raise DatabaseError(
            f"{db.path} has schema version {max(unknown)}, newer than this featuregraph knows "
            f"({latest_version()}); upgrade featuregraph to read it"
        )
    pending = [m for m in migrations if m.version not in applied]
    if pending and db.read_only:
        raise DatabaseError(
            f"{db.path} has schema version {max(applied, default=0)}, older than this featuregraph's "
            f"{latest_version()}; open it once for writing (e.g. `featuregraph migrate DB`) to upgrade it"
        )
    if pending:
        db.execute(CREATE_MIGRATIONS_TABLE)
    for mig in pending:
        with db.transaction():
            db.execute(mig.sql)
            db.execute(RECORD_MIGRATION, [mig.version, f"{mig.version:04d}_{mig.name}"])
    return current_version(db)
