"""The ``featuregraph`` command line.

Heavy modules (torch, sae_lens) are imported inside the commands that need them, so
``featuregraph info`` and friends start fast and work without them.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from featuregraph.errors import FeaturegraphError, InputError

app = typer.Typer(
    help="featuregraph: SAE ablation graphs across many prompts, stored in DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def user_errors(fn: Callable) -> Callable:
    """Show featuregraph's own errors as one line, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FeaturegraphError as exc:
            # typer vendors its own click, so exit the way it expects rather than via ClickException.
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def _layers(text: str) -> list[int]:
    """``"0-11"`` or ``"3,5,7"`` or ``"2-4,9"`` -> layer numbers."""
    out: list[int] = []
    try:
        for part in text.split(","):
            a, sep, b = part.strip().partition("-")
            out.extend(range(int(a), int(b) + 1) if sep else [int(a)])
    except ValueError:
        raise InputError(f"--sae-layers: expected ranges like 0-11 or 3,5,7, got {text!r}") from None
    return out


@app.command()
@user_errors
def ingest(
    prompts: Path = typer.Argument(..., help="Prompts: .txt (one per line) or .jsonl (objects with 'text', optional 'tag')."),
    db: Path = typer.Option(Path("featuregraph.duckdb"), "--db", help="DuckDB file to write (created if missing)."),
    model: str = typer.Option("gpt2", "--model", help="transformer_lens model name, or a local Hugging Face folder."),
    sae: list[Path] = typer.Option([], "--sae", help="Local sae_lens SAE folder (cfg.json + sae_weights.safetensors). Repeatable."),
    sae_release: Optional[str] = typer.Option(None, "--sae-release", help="sae_lens release, e.g. gpt2-small-res-jb."),
    sae_id: list[str] = typer.Option([], "--sae-id", help="SAE id within --sae-release, e.g. blocks.5.hook_resid_pre. Repeatable."),
    sae_layers: Optional[str] = typer.Option(None, "--sae-layers", help="Layer range for --sae-release, e.g. 0-11; ids from --sae-id-template."),
    sae_id_template: str = typer.Option("blocks.{layer}.hook_resid_pre", "--sae-id-template", help="SAE id for each of --sae-layers."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 (default), float64, bfloat16 or float16."),
    coefficient: float = typer.Option(0.0, "--coefficient", help="Ablation coefficient c: 0 = zero-ablation."),
    edge_top_k: int = typer.Option(32, "--edge-top-k", help="Edges kept per ablation, by |weight|."),
    edge_floor: float = typer.Option(1e-4, "--edge-floor", help="Drop edges with |weight| at or below this."),
    logit_top_k: int = typer.Option(10, "--logit-top-k", help="Tokens kept per ablation: top-k promoted and top-k suppressed by dprob."),
    top_next_k: int = typer.Option(10, "--top-next-k", help="Clean top next tokens stored per prompt."),
    batch_size: int = typer.Option(64, "--batch-size", help="Ablations per forward pass."),
    prepend_bos: Optional[bool] = typer.Option(None, "--prepend-bos/--no-prepend-bos", help="Default: as the SAEs' metadata says."),
    no_fold_ln: bool = typer.Option(False, "--no-fold-ln", help="Do not fold LayerNorm weights (as from_pretrained_no_processing)."),
    no_center_writing_weights: bool = typer.Option(False, "--no-center-writing-weights"),
    no_center_unembed: bool = typer.Option(False, "--no-center-unembed"),
    commit_every: int = typer.Option(16, "--commit-every", help="Commit results every N prompts (a crash loses at most these)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each commit."),
) -> None:
    """Run the ablation sweep over PROMPTS and store it in DB (re-running resumes)."""
    from ingest.config import ModelSpec, RunConfig, SaeSpec, SweepConfig
    from ingest.run import ingest as run_ingest

    _logging(verbose)
    specs = [SaeSpec(path=str(p)) for p in sae]
    ids = list(sae_id)
    if sae_layers is not None:
        if sae_release is None:
            raise InputError("--sae-layers needs --sae-release")
        ids += [sae_id_template.format(layer=layer) for layer in _layers(sae_layers)]
    if sae_release is not None and not ids:
        raise InputError("--sae-release needs --sae-id or --sae-layers")
    if ids and sae_release is None:
        raise InputError("--sae-id needs --sae-release")
    specs += [SaeSpec(release=sae_release, sae_id=i) for i in ids]
    config = RunConfig(
        model=ModelSpec(
            model,
            fold_ln=not no_fold_ln,
            center_writing_weights=not no_center_writing_weights,
            center_unembed=not no_center_unembed,
        ),
        saes=tuple(specs),
        sweep=SweepConfig(
            coefficient=coefficient,
            edge_top_k=edge_top_k,
            edge_floor=edge_floor,
            logit_top_k=logit_top_k,
            top_next_k=top_next_k,
            batch_size=batch_size,
        ),
        device=device,
        dtype=dtype,
        prepend_bos=prepend_bos,
    )
    if commit_every < 1:
        raise InputError(f"--commit-every must be >= 1, got {commit_every}")
    summary = run_ingest(db, prompts, config, progress=not quiet, commit_every=commit_every)
    verb = "resumed" if summary.resumed else "created"
    typer.echo(
        f"run {summary.run_id} {verb} in {summary.db_path}: {summary.n_swept} of {summary.n_prompts} prompts "
        f"swept in {summary.seconds:.1f}s ({summary.prompts_per_second:.2f} prompts/s)"
    )


@app.command()
@user_errors
def info(db: Path = typer.Argument(..., help="featuregraph DuckDB file.")) -> None:
    """Schema version, runs, row counts and size on disk of DB (opened read-only)."""
    from store.info import database_info, format_info

    typer.echo(format_info(database_info(db)))


@app.command()
@user_errors
def migrate(db: Path = typer.Argument(..., help="featuregraph DuckDB file.")) -> None:
    """Upgrade DB to this featuregraph's schema (opening it for writing does this too)."""
    from store.db import open_database
    from store.migrate import current_version

    with open_database(db) as database:
        typer.echo(f"{db}: schema version {current_version(database)}")


def _register_subcommands() -> None:
    from query.cli import register

    register(app)


_register_subcommands()


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
