"""Running a read query under the guard rails, and saying when the row cap cut its result.

:func:`fetch_rows` returns the frame together with a :class:`Truncation` (``None`` when the
result is complete). A cut result also counts its rows (``count(*)`` over the same query,
under a short time limit of its own), so that it can say "first 10,000 rows of 52,311", or
"first 10,000 rows; more exist" when even counting is too slow.

The query helpers (query/api.py and the page queries) return plain frames, and several of them
compose others; so that none of their cuts goes unsaid, :func:`fetch_rows` also reports each
cut to every :func:`capture` open around the call: ``with capture() as cuts: frame = helper(...)``.
"""

from __future__ import annotations

import contextvars
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import duckdb
import polars as pl

from featuregraph.errors import FeaturegraphError
from featuregraph.store.db import Database, QueryLimits

log = logging.getLogger(__name__)
T = TypeVar("T")

# Counting the rows of a cut result repeats the query's work: this long at most, then "more exist".
COUNT_TIME_LIMIT_S = 2.0
# The rows of the same query, counted: the query stays one SELECT, its values still bound parameters.
COUNT_ROWS_OF_QUERY = "SELECT count(*) AS n FROM (\n{query}\n) AS counted"

_captures: contextvars.ContextVar[tuple[list, ...]] = contextvars.ContextVar("featuregraph_cuts", default=())


@dataclass(frozen=True)
class Truncation:
    """A result cut at the row cap: ``shown`` rows kept out of ``total`` (None: not counted in time)."""

    shown: int
    total: int | None

    def message(self) -> str:
        """``first 10,000 rows of 52,311`` or ``first 10,000 rows; more exist``."""
        rows = "row" if self.shown == 1 else "rows"
        if self.total is None:
            return f"first {self.shown:,} {rows}; more exist"
        return f"first {self.shown:,} {rows} of {self.total:,}"


@dataclass(frozen=True)
class Rows:
    """A query's result: the frame, and how the row cap cut it (None: complete)."""

    frame: pl.DataFrame
    truncation: Truncation | None = None

    @property
    def truncated(self) -> bool:
        return self.truncation is not None


def count_rows(db: Database, sql: str, params: dict | list | None, limits: QueryLimits | None) -> int | None:
    """Rows ``sql`` returns in all, or None when counting fails or takes too long."""
    budget = COUNT_TIME_LIMIT_S
    if limits is not None and limits.time_limit_s is not None:
        budget = min(budget, limits.time_limit_s)
    counted = COUNT_ROWS_OF_QUERY.format(query=sql.strip().rstrip(";"))
    try:
        # Only a query that stays one SELECT once wrapped is counted (EXPLAIN, say, is not).
        if [s.type.name for s in db.con.extract_statements(counted)] != ["SELECT"]:
            return None
        result = db.query(counted, params, QueryLimits(time_limit_s=budget))
    except (FeaturegraphError, duckdb.Error) as exc:  # the count is a nicety: say "more exist"
        log.info("rows of a cut result not counted: %s", exc)
        return None
    return int(result.table.column(0)[0].as_py())


def fetch_rows(
    db: Database, sql: str, params: dict | list | None = None, limits: QueryLimits | None = None
) -> Rows:
    """Run ``sql`` through the guard rails (:meth:`store.db.Database.query`): the frame, and
    how the row cap cut it (also reported to every open :func:`capture`)."""
    result = db.query(sql, params, limits)
    frame = pl.from_arrow(result.table)
    if not result.truncated:
        return Rows(frame)
    cut = Truncation(frame.height, count_rows(db, sql, params, limits))
    log.info("result cut at the row cap: %s", cut.message())
    for cuts in _captures.get():
        cuts.append(cut)
    return Rows(frame, cut)


@contextmanager
def capture() -> Iterator[list[Truncation]]:
    """Collect the cuts of every query run inside the block (a list, in order)."""
    cuts: list[Truncation] = []
    token = _captures.set((*_captures.get(), cuts))
    try:
        yield cuts
    finally:
        _captures.reset(token)


def with_cut(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, Truncation | None]:
    """Call a query helper: (what it returns, the first cut of the queries behind it or None)."""
    with capture() as cuts:
        value = fn(*args, **kwargs)
    return value, (cuts[0] if cuts else None)


__all__ = ["COUNT_TIME_LIMIT_S", "Rows", "Truncation", "capture", "count_rows", "fetch_rows", "with_cut"]
