"""``featuregraph export-graph`` and ``featuregraph import-graph`` (docs/graphs.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from featuregraph.errors import InputError
from featuregraph.query.graph_export import stored_graph
from featuregraph.query.graph_formats import to_graphml, to_json_lines
from featuregraph.query.graph_prune import Pruning, fit_size, prune
from featuregraph.store.db import open_database
from featuregraph.store.graph_model import NEURONPEDIA_MAX_BYTES

FORMATS = ("json", "graphml", "json-lines")


@dataclass(frozen=True)
class Exported:
    data: bytes
    n_nodes: int
    n_links: int
    n_cut_for_size: int  # links dropped to stay under the size cap


def export_graph(
    db_path: str | Path,
    prompt: int,
    run: int | None = None,
    pruning: Pruning = Pruning(),
    fmt: str = "json",
    max_bytes: int = NEURONPEDIA_MAX_BYTES,
) -> Exported:
    """The graph file of prompt ``prompt`` (of ``run``), pruned, in ``fmt``. A ``json`` file is
    kept under ``max_bytes`` (Neuronpedia's upload limit) by dropping its weakest links."""
    if fmt not in FORMATS:
        raise InputError(f"--format: one of {', '.join(FORMATS)}, got {fmt!r}")
    pruning.check()
    with open_database(db_path, read_only=True) as db:
        graph = prune(stored_graph(db, prompt, run), pruning)
    cut = 0
    if fmt == "json":
        graph, data, cut = fit_size(graph, max_bytes)
    else:
        data = to_graphml(graph) if fmt == "graphml" else to_json_lines(graph)
    return Exported(data, len(graph.nodes), len(graph.links), cut)


def write_to_viewer_folder(folder: Path, data: bytes, fmt: str) -> Path:
    """Write a json export as ``folder/{slug}.json`` and list its metadata in
    ``folder/graph-metadata.json`` (``{"graphs": [metadata, ...]}``, replacing an entry of the
    same slug): the layout circuit-tracer's local server reads. Returns the file written."""
    if fmt != "json":
        raise InputError(f"--out names a folder: only --format json is written into one, not {fmt}")
    metadata = json.loads(data)["metadata"]
    slug = metadata["slug"]
    if not slug or "/" in slug or slug.startswith("."):
        raise InputError(f"the graph's slug {slug!r} cannot name a file")
    path = folder / f"{slug}.json"
    path.write_bytes(data)
    index = folder / "graph-metadata.json"
    try:
        listed = json.loads(index.read_text()) if index.exists() else {"graphs": []}
        graphs = [g for g in listed.get("graphs", []) if g.get("slug") != slug]
    except (ValueError, AttributeError, OSError):
        raise InputError(f'{index} is not a graph list ({{"graphs": [...]}}); move it away first') from None
    index.write_text(json.dumps({"graphs": graphs + [metadata]}, indent=1))
    return path


def register(app: typer.Typer) -> None:
    """Add ``export-graph`` and ``import-graph`` to ``app``."""
    from featuregraph.cli_support import user_errors

    @app.command("export-graph")
    @user_errors
    def export_graph_cmd(
        db: Path = typer.Argument(..., help="featuregraph DuckDB file (opened read-only)."),
        prompt: int = typer.Option(..., "--prompt", help="Prompt id to export."),
        run: Optional[int] = typer.Option(
            None, "--run", help="Run id (needed when several runs hold the prompt)."
        ),
        out: Optional[Path] = typer.Option(
            None,
            "--out",
            "-o",
            help="Write here instead of stdout; a folder gets SLUG.json and graph-metadata.json.",
        ),
        top_k: Optional[int] = typer.Option(
            None, "--top-k", help="Keep each node's K strongest outgoing links."
        ),
        min_weight: Optional[float] = typer.Option(
            None, "--min-weight", help="Keep links with |weight| >= W."
        ),
        node_threshold: Optional[float] = typer.Option(
            None, "--node-threshold", help="Keep the fewest nodes holding this fraction of influence (0-1]."
        ),
        edge_threshold: Optional[float] = typer.Option(
            None, "--edge-threshold", help="Keep the fewest links holding this fraction of influence (0-1]."
        ),
        fmt: str = typer.Option(
            "json", "--format", "-f", help="json (Neuronpedia graph), graphml or json-lines."
        ),
        max_bytes: int = typer.Option(
            NEURONPEDIA_MAX_BYTES, "--max-bytes", help="Size cap of a json file (Neuronpedia's upload limit)."
        ),
    ) -> None:
        """Write one stored prompt graph as a Neuronpedia / circuit-tracer graph file."""
        pruning = Pruning(top_k, min_weight, node_threshold, edge_threshold)
        result = export_graph(db, prompt, run, pruning, fmt, max_bytes)
        if out is None:
            typer.echo(result.data.decode("utf-8"), nl=False)
        elif out.is_dir():
            out = write_to_viewer_folder(out, result.data, fmt)
        else:
            out.write_bytes(result.data)
        note = f" ({result.n_cut_for_size} weakest links dropped to stay under {max_bytes} bytes)"
        typer.echo(
            f"{result.n_nodes} nodes, {result.n_links} links, {len(result.data)} bytes"
            + (f" written to {out}" if out else "")
            + (note if result.n_cut_for_size else ""),
            err=True,
        )

    @app.command("import-graph")
    @user_errors
    def import_graph_cmd(
        db: Path = typer.Argument(..., help="featuregraph DuckDB file (created if missing)."),
        files: list[str] = typer.Argument(
            ..., help="Graph files, folders (searched for *.json) or glob patterns."
        ),
        batch: int = typer.Option(256, "--batch", help="Files per transaction."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        """Import graph JSON files; bad ones are listed and skipped, stored ones skipped (resumable)."""
        from featuregraph.store.graph_import import import_graphs

        if batch < 1:
            raise InputError(f"--batch must be at least 1, got {batch}")
        bar = None

        def start(n: int) -> None:
            nonlocal bar
            if progress:
                bar = typer.progressbar(length=n, label="graphs", file=None).__enter__()

        def step(k: int) -> None:
            if bar is not None:
                bar.update(k)

        try:
            summary = import_graphs(db, files, batch, on_file=step, on_start=start)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)
        for path, reason in summary.bad:
            typer.echo(f"skipped {path}: {reason}", err=True)
        rate = summary.n_imported / summary.seconds if summary.seconds > 0 else 0.0
        runs = ", ".join(f"run {r} ({m})" for r, m in sorted(summary.runs.items())) or "no run"
        typer.echo(
            f"{summary.n_imported} of {summary.n_files} files imported into {runs} in {summary.seconds:.1f}s "
            f"({rate:.0f} files/s, {summary.n_links} links, {summary.n_edges} projected edges); "
            f"{summary.n_duplicates} already stored, {len(summary.bad)} bad"
        )


__all__ = ["export_graph", "register", "Exported", "FORMATS"]
