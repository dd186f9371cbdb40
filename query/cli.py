"""Command-line entry points of the query layer, registered on the main ``featuregraph`` app.

``featuregraph query HELPER DB ...`` runs one SQL helper (query/api.py) on a database opened
read-only; ``featuregraph sql DB "SELECT ..."`` runs any read query; ``featuregraph optimize
DB`` sorts the tables for the queries (store/optimize.py). Results print as a table or go to
CSV, JSON or Parquet (``--format``, ``--out``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

FORMAT_HELP = "table, csv, json or parquet (parquet needs --out)."


def _emit(
    frame, fmt: str, out: Optional[Path], max_rows: Optional[int], truncated: bool | None = None
) -> None:
    from featuregraph.query.output import write

    text = write(frame, fmt, out)
    if text is not None:
        typer.echo(text, nl=not text.endswith("\n"))
    cut = truncated if truncated is not None else (max_rows is not None and frame.height >= max_rows)
    if cut:
        typer.echo(f"(stopped at {max_rows} rows; raise --max-rows to see more)", err=True)
    elif out is not None:
        typer.echo(f"{frame.height} rows written to {out}", err=True)


def _run(
    db_path: Path,
    fn: Callable,
    fmt: str,
    out: Optional[Path],
    max_rows: Optional[int],
    time_limit: Optional[float],
    **kwargs,
) -> None:
    from featuregraph.store.db import QueryLimits, open_database

    limits = QueryLimits(time_limit_s=time_limit, max_rows=max_rows)
    with open_database(db_path, read_only=True) as db:
        frame = fn(db, limits=limits, **kwargs)
    _emit(frame, fmt, out, max_rows)


def register(app: typer.Typer) -> None:
    """Add the query layer's commands (``query``, ``sql``, ``optimize``) to ``app``."""
    from featuregraph.cli_support import user_errors

    query_app = typer.Typer(
        help="Ask a database: one prompt's graph, recurring paths, a feature's neighbourhood, ...",
        no_args_is_help=True,
    )
    app.add_typer(query_app, name="query")

    db_arg = typer.Argument(..., help="featuregraph DuckDB file (opened read-only).")
    run_opt = typer.Option(None, "--run", help="Run id (default: every run; results carry run_id).")
    fmt_opt = typer.Option("table", "--format", "-f", help=FORMAT_HELP)
    out_opt = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout.")
    rows_opt = typer.Option(10_000, "--max-rows", help="Row cap: stop reading after this many rows.")
    time_opt = typer.Option(None, "--time-limit", help="Stop the query after this many seconds.")

    @query_app.command("prompt-graph")
    @user_errors
    def prompt_graph_cmd(
        db: Path = db_arg,
        prompt: int = typer.Argument(..., help="Prompt id (0-based position in the prompt file)."),
        run: Optional[int] = run_opt,
        k: int = typer.Option(10, "--k", help="Edges kept per upstream feature, largest |weight| first."),
        min_path: int = typer.Option(
            2, "--min-path", help="Keep only edges on paths of at least this many edges."
        ),
        min_weight: float = typer.Option(0.0, "--min-weight", help="Drop edges with |weight| below this."),
        fmt: str = fmt_opt,
        out: Optional[Path] = out_opt,
        max_rows: Optional[int] = rows_opt,
        time_limit: Optional[float] = time_opt,
    ) -> None:
        """One prompt's graph, pruned the seed's way (top-k per ablated feature, then long paths)."""
        from featuregraph.query.api import prompt_graph

        _run(
            db,
            prompt_graph,
            fmt,
            out,
            max_rows,
            time_limit,
            prompt=prompt,
            run=run,
            k=k,
            min_path=min_path,
            min_weight=min_weight,
        )

    @query_app.command("recurring")
    @user_errors
    def recurring_cmd(
        db: Path = db_arg,
        edges: int = typer.Option(3, "--edges", help="Edges per path, 2 to 6."),
        min_support: int = typer.Option(
            2, "--min-support", help="Keep paths found in at least this many prompts."
        ),
        run: Optional[int] = run_opt,
        min_layer: Optional[int] = typer.Option(
            None, "--min-layer", help="Paths start at or after this layer."
        ),
        max_layer: Optional[int] = typer.Option(
            None, "--max-layer", help="Paths end at or before this layer."
        ),
        signs: Optional[str] = typer.Option(
            None, "--signs", help="Sign pattern, one of + - * per edge, e.g. '+-*'."
        ),
        min_weight: float = typer.Option(
            0.0, "--min-weight", help="Count an edge only where |weight| >= this."
        ),
        tag: Optional[str] = typer.Option(None, "--tag", help="Only prompts with this tag."),
        limit: Optional[int] = typer.Option(50, "--limit", help="Most supported paths to show."),
        fmt: str = fmt_opt,
        out: Optional[Path] = out_opt,
        max_rows: Optional[int] = rows_opt,
        time_limit: Optional[float] = time_opt,
    ) -> None:
        """Recurring paths: the same chain of features and signs in many prompts, by support."""
        from featuregraph.query.api import recurring_paths

        _run(
            db,
            recurring_paths,
            fmt,
            out,
            max_rows,
            time_limit,
            n_edges=edges,
            min_support=min_support,
            run=run,
            min_layer=min_layer,
            max_layer=max_layer,
            signs=signs,
            min_weight=min_weight,
            tag=tag,
            limit=limit,
        )

    @query_app.command("path-prompts")
    @user_errors
    def path_prompts_cmd(
        db: Path = db_arg,
        path: str = typer.Argument(..., help="Features of the path, e.g. '5.10 -> 6.20 -> 7.30'."),
        run: Optional[int] = run_opt,
        signs: Optional[str] = typer.Option(None, "--signs", help="Sign pattern, one of + - * per edge."),
        min_weight: float = typer.Option(0.0, "--min-weight", help="Require |weight| >= this on every edge."),
        tag: Optional[str] = typer.Option(None, "--tag", help="Only prompts with this tag."),
        fmt: str = fmt_opt,
        out: Optional[Path] = out_opt,
        max_rows: Optional[int] = rows_opt,
        time_limit: Optional[float] = time_opt,
    ) -> None:
        """Prompts that contain a path, with the weight of each of its edges."""
        from featuregraph.query.api import path_prompts

        _run(
            db,
            path_prompts,
            fmt,
            out,
            max_rows,
            time_limit,
            path=path,
            run=run,
            signs=signs,
            min_weight=min_weight,
            tag=tag,
        )

    @query_app.command("neighbourhood")
    @user_errors
    def neighbourhood_cmd(
        db: Path = db_arg,
        feature: str = typer.Argument(..., help="Feature as LAYER.FEATURE, e.g. 5.10603."),
        run: Optional[int] = run_opt,
        top: Optional[int] = typer.Option(20, "--top", help="Neighbours per direction (in, out)."),
        min_count: int = typer.Option(
            1, "--min-count", help="Only neighbours seen in at least this many prompts."
        ),
        fmt: str = fmt_opt,
        out: Optional[Path] = out_opt,
        max_rows: Optional[int] = rows_opt,
        time_limit: Optional[float] = time_opt,
    ) -> None:
        """A feature's in- and out-edges across prompts: count, mean, std, sign consistency."""
        from featuregraph.query.api import feature_edges

        _run(
            db,
            feature_edges,
            fmt,
            out,
            max_rows,
            time_limit,
            feature=feature,
            run=run,
            top=top,
            min_count=min_count,
        )

    @query_app.command("logits")
    @user_errors
    def logits_cmd(
        db: Path = db_arg,
        feature: str = typer.Argument(..., help="Feature as LAYER.FEATURE, e.g. 5.10603."),
        run: Optional[int] = run_opt,
        top: int = typer.Option(10, "--top", help="Tokens per direction (promoted, suppressed)."),
        fmt: str = fmt_opt,
        out: Optional[Path] = out_opt,
        max_rows: Optional[int] = rows_opt,
        time_limit: Optional[float] = time_opt,
    ) -> None:
        """Tokens that ablating a feature promotes and suppresses most, averaged over prompts."""
        from featuregraph.query.api import feature_logits

        _run(db, feature_logits, fmt, out, max_rows, time_limit, feature=feature, run=run, top=top)

    @query_app.command("contexts")
    @user_errors
    def contexts_cmd(
        db: Path = db_arg,
        feature: str = typer.Argument(..., help="Feature as LAYER.FEATURE, e.g. 5.10603."),
        run: Optional[int] = run_opt,
        top: int = typer.Option(10, "--top", help="Prompts to show."),
        fmt: str = fmt_opt,
        out: Optional[Path] = out_opt,
        max_rows: Optional[int] = rows_opt,
        time_limit: Optional[float] = time_opt,
    ) -> None:
        """Top-activating contexts of a feature, with its activation at every token."""
        from featuregraph.query.api import top_contexts

        _run(db, top_contexts, fmt, out, max_rows, time_limit, feature=feature, run=run, top=top)

    @query_app.command("compare")
    @user_errors
    def compare_cmd(
        db: Path = db_arg,
        prompt_a: int = typer.Argument(..., help="First prompt id."),
        prompt_b: int = typer.Argument(..., help="Second prompt id."),
        run: Optional[int] = run_opt,
        min_weight: float = typer.Option(0.0, "--min-weight", help="Ignore edges with |weight| below this."),
        fmt: str = fmt_opt,
        out: Optional[Path] = out_opt,
        max_rows: Optional[int] = rows_opt,
        time_limit: Optional[float] = time_opt,
    ) -> None:
        """Two prompts' graphs side by side: shared edges and each one's own."""
        from featuregraph.query.api import compare_prompts

        _run(
            db,
            compare_prompts,
            fmt,
            out,
            max_rows,
            time_limit,
            prompt_a=prompt_a,
            prompt_b=prompt_b,
            run=run,
            min_weight=min_weight,
        )

    @app.command("sql")
    @user_errors
    def sql_cmd(
        db: Path = db_arg,
        sql: str = typer.Argument(..., help="One SELECT (macros such as recurring_paths(...) included)."),
        fmt: str = fmt_opt,
        out: Optional[Path] = out_opt,
        max_rows: Optional[int] = rows_opt,
        time_limit: Optional[float] = time_opt,
    ) -> None:
        """Run one read-only SQL query on DB; anything that would write is refused."""
        from featuregraph.query.readonly import run_sql
        from featuregraph.store.db import QueryLimits

        frame, truncated = run_sql(db, sql, limits=QueryLimits(time_limit_s=time_limit, max_rows=max_rows))
        _emit(frame, fmt, out, max_rows, truncated)

    @app.command("optimize")
    @user_errors
    def optimize_cmd(
        db: Path = typer.Argument(..., help="featuregraph DuckDB file (needs the write lock)."),
    ) -> None:
        """Sort DB's tables for the queries and rebuild the edge summary (see docs/sql.md)."""
        from featuregraph.errors import DatabaseError
        from featuregraph.store.db import open_database
        from featuregraph.store.optimize import optimize

        if not db.exists():
            raise DatabaseError(f"no database at {db}")
        with open_database(db) as database:
            timings = optimize(database, report=lambda line: typer.echo(line, err=True))
        typer.echo(f"{db}: optimized in {sum(timings.values()):.1f}s")
