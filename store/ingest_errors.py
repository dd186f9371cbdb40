"""``ingest_errors``: the prompts of a run that were not swept, and why (migration 0006)."""

from __future__ import annotations

from typing import Any, Iterable

from featuregraph.store.db import Database
from featuregraph.store.tables import arrow_table, value_columns

DELETE_RUN_ERRORS = "DELETE FROM ingest_errors WHERE run_id = ?"


def record_ingest_errors(db: Database, run_id: int, errors: Iterable[dict[str, Any]]) -> None:
    """Make ``errors`` the run's ingest errors, replacing what was recorded before.

    One transaction, and idempotent: the errors of a run follow from its prompts and
    policies alone, so a resumed run records exactly what an uninterrupted one did.
    Each error is a dict of the table's columns (``external_id``, ``source_line`` and
    ``excerpt`` may be left out).
    """
    rows = list(errors)
    columns = {c: [r.get(c) for r in rows] for c in value_columns("ingest_errors")}
    with db.transaction():
        db.execute(DELETE_RUN_ERRORS, [run_id])
        db.insert_arrow("ingest_errors", arrow_table("ingest_errors", columns, run_id=run_id))


__all__ = ["record_ingest_errors"]
