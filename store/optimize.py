"""``featuregraph optimize``: rewrite tables in the order the query layer reads them.

DuckDB keeps min/max statistics (zone maps) per row group of about 122,880 rows and skips the
row groups a filter cannot match. Rows sorted by what the queries filter on therefore cost
only the row groups that hold them, without any index:

- ``edges`` by (run, prompt, up layer, up feature, ...): one prompt's graph reads a row
  group or two (ingest already writes prompts in order; optimize restores it after resumes);
- ``logit_effects`` and ``activations`` by (run, layer, feature, prompt): one feature's
  logit effects and contexts;
- ``edge_summary_base`` by layer pair, then the Z-order of its (up, down) features (a feature's
  in- and out-edges each read a few row groups), ``edge_occurrences_base`` by how many prompts
  each edge occurs in, and the pair index by how many prompts each 2-chain occurs in (recurring
  paths read a prefix), rebuilt from ``edges``;
  the summary's delta (``edge_delta``, store/summary.py) is emptied.

Rows written after an optimize are appended unsorted (and their edges kept in the delta until a
compaction folds them in): every query stays exact, only less of the table is skipped until the
next optimize. ``optimize(compact_only=True)`` only folds the delta (one scan of the base).
"""

from __future__ import annotations

import re
import time
from typing import Callable

from featuregraph.errors import DatabaseError
from featuregraph.store.db import Database, quote_identifier
from featuregraph.store.summary import fold_delta, rebuild_summary

# Table -> sort key. Names are fixed here, never taken from input.
SORT_ORDERS: dict[str, tuple[str, ...]] = {
    "edges": ("run_id", "prompt_id", "up_layer", "up_feature", "down_layer", "down_feature"),
    "logit_effects": ("run_id", "layer", "feature", "prompt_id", "token_id"),
    "activations": ("run_id", "layer", "feature", "prompt_id", "position"),
}

TABLE_DDL = """
SELECT sql FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main' AND table_name = ?
"""
_SORTED = "__fg_sorted"
_CREATE = re.compile(r"^CREATE TABLE\s+(?:main\.)?\"?[A-Za-z_][A-Za-z0-9_]*\"?\s*\(", re.IGNORECASE)


def rewrite_sorted(db: Database, table: str) -> None:
    """Rewrite ``table`` (one of :data:`SORT_ORDERS`) in its sort order, in one transaction.

    The copy is created from the table's own DDL, so columns, types and constraints stay the
    same; views and macros name the table, so they read the new one.
    """
    if table not in SORT_ORDERS:
        raise DatabaseError(f"refusing to rewrite unknown table {table!r}")
    row = db.fetchone(TABLE_DDL, [table])
    if row is None or not _CREATE.match(row[0]):
        raise DatabaseError(f"cannot read the definition of table {table!r}")
    create = _CREATE.sub(f"CREATE TABLE {quote_identifier(_SORTED)} (", row[0], count=1)
    order = ", ".join(quote_identifier(c) for c in SORT_ORDERS[table])
    name = quote_identifier(table)
    with db.transaction():
        db.execute(create)
        db.execute(f"INSERT INTO {quote_identifier(_SORTED)} SELECT * FROM {name} ORDER BY {order}")
        db.execute(f"DROP TABLE {name}")
        db.execute(f"ALTER TABLE {quote_identifier(_SORTED)} RENAME TO {name}")


def optimize(
    db: Database, report: Callable[[str], None] | None = None, compact_only: bool = False
) -> dict[str, float]:
    """Sort every table of :data:`SORT_ORDERS`, rebuild the summary and checkpoint; or
    (``compact_only``) fold the summary's delta into its base and checkpoint.

    Returns seconds per step. Needs the write lock: run it while nothing else writes.
    """
    if db.read_only:
        raise DatabaseError(f"{db.path} is open read-only; optimize needs to write")
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable[[], None]) -> None:
        start = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - start
        if report:
            report(f"{name}: {timings[name]:.1f}s")

    if compact_only:
        step("fold the summary delta", lambda: fold_delta(db))
    else:
        for table in SORT_ORDERS:
            step(f"sort {table}", lambda t=table: rewrite_sorted(db, t))
        step("rebuild edge_summary and edge_occurrences", lambda: rebuild_summary(db))
    step("checkpoint", lambda: db.execute("CHECKPOINT"))
    return timings


__all__ = ["SORT_ORDERS", "optimize", "rewrite_sorted"]
