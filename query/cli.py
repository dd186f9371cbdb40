"""Command-line entry points of the query layer, registered on the main ``featuregraph`` app.

``featuregraph query HELPER DB ...`` runs one SQL helper (query/api.py) on a database opened
read-only; its subcommands and their options are generated from the table of helpers in
query/helpers.py. ``featuregraph sql DB "SELECT ..."`` runs any read query; ``featuregraph
optimize DB`` sorts the tables for the queries (store/optimize.py). Results print as a table or
go to CSV, JSON or Parquet (``--format``, ``--out``); a result cut by the row cap says so on
stderr ("first N rows of M").
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from featuregraph.query.helpers import HELPERS, Helper, Param

FORMAT_HELP = "table, csv, json or parquet (parquet needs --out)."
# `featuregraph sql` runs whatever it is given: a stray cross join should not hold the terminal.
SQL_TIME_LIMIT_S = 60.0
# The options every query command takes after its own, by keyword of the generated command.
COMMON = ("db", "fmt", "out", "max_rows", "time_limit")


def _emit(frame, fmt: str, out: Optional[Path], max_rows: Optional[int], truncated: Any = None) -> None:
    """Print or write ``frame``; ``truncated`` (a :class:`query.rows.Truncation`, or None) says
    on stderr how the row cap cut it."""
    from featuregraph.query.output import write

    text = write(frame, fmt, out)
    if text is not None:
        typer.echo(text, nl=not text.endswith("\n"))
    if truncated:
        typer.echo(f"{truncated.message()} (stopped at the row cap; raise --max-rows to see more)", err=True)
    elif out is not None:
        typer.echo(f"{frame.height} rows written to {out}", err=True)


def _run(
    db_path: Path,
    helper: Helper,
    fmt: str,
    out: Optional[Path],
    max_rows: Optional[int],
    time_limit: Optional[float],
    **kwargs,
) -> None:
    from featuregraph.store.db import QueryLimits, open_database

    limits = QueryLimits(time_limit_s=time_limit, max_rows=max_rows)
    with open_database(db_path, read_only=True) as db:
        rows = helper.run(db, limits, **kwargs)
    _emit(rows.frame, fmt, out, max_rows, rows.truncation)


def _cli_param(p: Param) -> inspect.Parameter:
    """A helper's parameter as typer reads it: an argument, or an option with its flag."""
    kind = inspect.Parameter.KEYWORD_ONLY
    if p.required:
        return inspect.Parameter(p.name, kind, default=typer.Argument(..., help=p.help), annotation=p.type)
    annotation = Optional[p.type] if p.optional or p.default is None else p.type
    return inspect.Parameter(
        p.name, kind, default=typer.Option(p.default, p.flag, help=p.help), annotation=annotation
    )


def _command(helper: Helper, common: dict[str, inspect.Parameter]) -> Callable[..., None]:
    """``featuregraph query HELPER``: a function whose signature typer turns into the command."""

    def command(**kwargs: Any) -> None:
        db, fmt, out, max_rows, time_limit = (kwargs.pop(name) for name in COMMON)
        _run(db, helper, fmt, out, max_rows, time_limit, **kwargs)

    params = [common["db"], *(_cli_param(p) for p in helper.params), *(common[n] for n in COMMON[1:])]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = helper.summary
    command.__name__ = helper.function + "_cmd"
    return command


def register(app: typer.Typer) -> None:
    """Add the query layer's commands (``query``, ``sql``, ``optimize``) to ``app``."""
    from featuregraph.cli_support import user_errors

    query_app = typer.Typer(
        help="Ask a database: one prompt's graph, recurring paths, a feature's neighbourhood, ...",
        no_args_is_help=True,
    )
    app.add_typer(query_app, name="query")

    db_arg = typer.Argument(..., help="featuregraph DuckDB file (opened read-only).")
    fmt_opt = typer.Option("table", "--format", "-f", help=FORMAT_HELP)
    out_opt = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout.")
    rows_opt = typer.Option(10_000, "--max-rows", help="Row cap: stop reading after this many rows.")
    time_opt = typer.Option(None, "--time-limit", help="Stop the query after this many seconds.")

    kind = inspect.Parameter.KEYWORD_ONLY
    common = {
        "db": inspect.Parameter("db", kind, default=db_arg, annotation=Path),
        "fmt": inspect.Parameter("fmt", kind, default=fmt_opt, annotation=str),
        "out": inspect.Parameter("out", kind, default=out_opt, annotation=Optional[Path]),
        "max_rows": inspect.Parameter("max_rows", kind, default=rows_opt, annotation=Optional[int]),
        "time_limit": inspect.Parameter("time_limit", kind, default=time_opt, annotation=Optional[float]),
    }
    for helper in HELPERS.values():
        query_app.command(helper.command)(user_errors(_command(helper, common)))

    @app.command("sql")
    @user_errors
    def sql_cmd(
        db: Path = db_arg,
        sql: str = typer.Argument(..., help="One SELECT (macros such as recurring_paths(...) included)."),
        fmt: str = fmt_opt,
        out: Optional[Path] = out_opt,
        max_rows: Optional[int] = rows_opt,
        time_limit: float = typer.Option(
            SQL_TIME_LIMIT_S, "--time-limit", help="Stop the query after this many seconds (0: no limit)."
        ),
    ) -> None:
        """Run one read-only SQL query on DB in the SQL sandbox (no files, settings or extensions)."""
        from featuregraph.query.readonly import run_sql
        from featuregraph.store.db import QueryLimits

        limits = QueryLimits(time_limit_s=time_limit if time_limit > 0 else None, max_rows=max_rows)
        frame, truncated = run_sql(db, sql, limits=limits)
        _emit(frame, fmt, out, max_rows, truncated)

    @app.command("export-parquet")
    @user_errors
    def export_parquet_cmd(
        db: Path = typer.Argument(..., help="featuregraph DuckDB file (read-only)."),
        out: Path = typer.Argument(..., help="Folder of the Parquet dataset (created or extended)."),
    ) -> None:
        """Export DB's edges as a Parquet dataset partitioned by run and layer (only prompts
        not exported yet; see docs/sql.md)."""
        from featuregraph.store.parquet_export import export_parquet

        done = export_parquet(db, out)
        if done["batch"] == 0:
            typer.echo(f"{out}: nothing new to export")
        else:
            typer.echo(f"{out}: {done['prompts']} prompts, {done['edges']} edges added (batch {done['batch']})")

    @app.command("optimize")
    @user_errors
    def optimize_cmd(
        db: Path = typer.Argument(..., help="featuregraph DuckDB file (needs the write lock)."),
        compact_only: bool = typer.Option(
            False, "--compact-only", help="Only fold the edge summary's delta into its base (fast)."
        ),
    ) -> None:
        """Sort DB's tables for the queries and rebuild the edge summary (see docs/sql.md)."""
        from featuregraph.errors import DatabaseError
        from featuregraph.store.db import open_database
        from featuregraph.store.optimize import optimize

        if not db.exists():
            raise DatabaseError(f"no database at {db}")
        with open_database(db) as database:
            timings = optimize(database, report=lambda line: typer.echo(line, err=True), compact_only=compact_only)
        typer.echo(f"{db}: optimized in {sum(timings.values()):.1f}s")
