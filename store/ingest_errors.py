"""``ingest_errors``: the prompts of a run that were not swept, and why (migration 0006)."""

from __future__ import annotations

from typing import Any, Iterable

import pyarrow as pa

from featuregraph.store.db import Database

DELETE_RUN_ERRORS = "DELETE FROM ingest_errors WHERE run_id = ?"

COLUMNS = ("prompt_index", "external_id", "source_line", "reason", "detail", "excerpt")


def record_ingest_errors(db: Database, run_id: int, errors: Iterable[dict[str, Any]]) -> None:
    """Make ``errors`` the run's ingest errors, replacing what was recorded before.

    One transaction, and idempotent: the errors of a run follow from its prompts and
    policies alone, so a resumed run records exactly what an uninterrupted one did.
    """
    rows = list(errors)
    data = pa.table(
        {
            "run_id": pa.array([run_id] * len(rows), pa.int32()),
            "prompt_index": pa.array([r["prompt_index"] for r in rows], pa.int32()),
            "external_id": pa.array([r.get("external_id") for r in rows], pa.string()),
            "source_line": pa.array([r.get("source_line") for r in rows], pa.int32()),
            "reason": pa.array([r["reason"] for r in rows], pa.string()),
            "detail": pa.array([r["detail"] for r in rows], pa.string()),
            "excerpt": pa.array([r.get("excerpt") for r in rows], pa.string()),
        }
    )
    with db.transaction():
        db.execute(DELETE_RUN_ERRORS, [run_id])
        db.insert_arrow("ingest_errors", data)


__all__ = ["record_ingest_errors"]
