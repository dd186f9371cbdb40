"""The ``featuregraph`` command line.

Heavy modules (torch, sae_lens) are imported inside the commands that need them, so
``featuregraph info`` and friends start fast and work without them.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from featuregraph.cli_support import config_options, user_errors
from featuregraph.errors import InputError
from featuregraph.ingest.config import TOO_LONG_POLICIES, ModelSpec, RunConfig, SweepConfig
from featuregraph.ingest.sources import BAD_PROMPT_POLICIES

app = typer.Typer(
    help="featuregraph: SAE ablation graphs across many prompts, stored in DuckDB.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: it wraps at the terminal's width where Rich's panels cut option names
    # ("--no-center-writi…") at 80 columns. Sub-commands inherit it.
    rich_markup_mode=None,
)


# What the compute commands import; the core install (databases, queries, dashboard) has none of it.
INGEST_EXTRA = ("torch", "sae_lens", "transformer_lens", "transformers")


def _needs_ingest_extra(command: str) -> None:
    """A one-line error naming the extra to install when the compute side is missing."""
    missing = [name for name in INGEST_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(
            f"`featuregraph {command}` needs {', '.join(missing)} (not installed): "
            "pip install 'featuregraph[ingest]' (torch first, see README)"
        )


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
@config_options("sweep", SweepConfig)
@config_options("model_flags", ModelSpec, skip=("name_or_path",))
@config_options("run_flags", RunConfig, skip=("model", "saes", "sweep"))
def ingest(
    prompts: Path = typer.Argument(..., help="Prompts: .txt (one per line), .jsonl or .parquet (records with 'text', optional 'id', 'tag', 'tags', 'metadata'), or hf:DATASET?split=train&column=text&limit=N."),
    db: Path = typer.Option(Path("featuregraph.duckdb"), "--db", help="DuckDB file to write (created if missing)."),
    model: str = typer.Option("gpt2", "--model", help="transformer_lens model name, or a local Hugging Face folder."),
    sae: list[Path] = typer.Option([], "--sae", help="Local sae_lens SAE folder (cfg.json + sae_weights.safetensors). Repeatable."),
    sae_release: Optional[str] = typer.Option(None, "--sae-release", help="sae_lens release, e.g. gpt2-small-res-jb."),
    sae_id: list[str] = typer.Option([], "--sae-id", help="SAE id within --sae-release, e.g. blocks.5.hook_resid_pre. Repeatable."),
    sae_layers: Optional[str] = typer.Option(None, "--sae-layers", help="Layer range for --sae-release, e.g. 0-11; ids from --sae-id-template."),
    sae_id_template: str = typer.Option("blocks.{layer}.hook_resid_pre", "--sae-id-template", help="SAE id for each of --sae-layers."),
    sae_release_id: list[str] = typer.Option([], "--sae-release-id", help="One more SAE from any release, RELEASE:ID (e.g. gpt2-small-hook-z-kk:blocks.5.hook_z beside --sae-release gpt2-small-res-jb). Repeatable."),
    commit_every: int = typer.Option(16, "--commit-every", help="Commit results every N prompts (a crash loses at most these)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log each commit."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Distributed ingest on Ray with N sweep workers (one per GPU, or CPU workers); needs Ray (the distributed extra)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to run the workers on (default: start a local one); implies a distributed ingest."),
    shard_dir: Optional[Path] = typer.Option(None, "--shard-dir", help="Where distributed workers write Parquet shards (default: DB.shards next to the database)."),
    cpus_per_worker: float = typer.Option(1, "--cpus-per-worker", help="CPUs each distributed worker reserves (and torch threads it uses)."),
    bad_prompts: Optional[Literal[BAD_PROMPT_POLICIES]] = typer.Option(None, "--bad-prompts", help="error: stop at the first bad prompt (default without --workers); record: list it in ingest_errors and go on (default with --workers)."),
    too_long: Literal[TOO_LONG_POLICIES] = typer.Option("reject", "--too-long", help="Prompts longer than the model's context: reject (a bad prompt) or truncate (cut, flagged in metadata)."),
    sweep: dict[str, Any] = None,
    model_flags: dict[str, Any] = None,
    run_flags: dict[str, Any] = None,
) -> None:
    """Run the ablation sweep over PROMPTS and store it in DB (re-running resumes).

    The sweep, model and run settings (--coefficient ... --prepend-bos) are flags built from the
    fields of SweepConfig, ModelSpec and RunConfig (ingest/config.py).
    """
    _needs_ingest_extra("ingest")
    from featuregraph.ingest.config import SaeSpec
    from featuregraph.ingest.run import ingest as run_ingest

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
    for ref in sae_release_id:
        release, sep, one_id = ref.partition(":")
        if not (sep and release and one_id):
            raise InputError(f"--sae-release-id: expected RELEASE:ID, got {ref!r}")
        specs.append(SaeSpec(release=release, sae_id=one_id))
    config = RunConfig(
        model=ModelSpec(model, **model_flags), saes=tuple(specs), sweep=SweepConfig(**sweep), **run_flags
    )
    if commit_every < 1:
        raise InputError(f"--commit-every must be >= 1, got {commit_every}")
    distributed = workers is not None or ray_address is not None
    bad_prompts = bad_prompts or ("record" if distributed else "error")
    source = str(prompts) if str(prompts).startswith("hf:") else prompts
    if distributed:
        from featuregraph.ingest.distributed import import_ray, ingest_distributed

        import_ray()  # a clear one-line error, before any loading, when Ray is missing
        summary = ingest_distributed(
            db, source, config, workers=workers, ray_address=ray_address, shard_dir=shard_dir,
            bad_prompts=bad_prompts, too_long=too_long, commit_every=commit_every,
            cpus_per_worker=cpus_per_worker, progress=not quiet,
        )  # fmt: skip
    else:
        summary = run_ingest(
            db, source, config, progress=not quiet, commit_every=commit_every, bad_prompts=bad_prompts, too_long=too_long
        )
    verb = "resumed" if summary.resumed else "created"
    typer.echo(
        f"run {summary.run_id} {verb} in {summary.db_path}: {summary.n_swept} of {summary.n_prompts} prompts "
        f"swept in {summary.seconds:.1f}s ({summary.prompts_per_second:.2f} prompts/s)"
        + (f"; {summary.n_left_out} prompts left out (see the ingest_errors table)" if summary.n_left_out else "")
    )


@app.command()
@user_errors
def info(
    db: Path = typer.Argument(..., help="featuregraph DuckDB file."),
    quick: bool = typer.Option(False, "--quick", help="Count rows without reading every table in full."),
) -> None:
    """Check DB (opened read-only) and show its schema version, runs, row counts and size on disk.

    A truncated or unreadable file is an error; a run left 'running' by an ingest that was
    stopped is shown as interrupted, with the command that resumes it.
    """
    from featuregraph.store.info import database_info, format_info

    typer.echo(format_info(database_info(db, full_check=not quick)))


@app.command()
@user_errors
def migrate(db: Path = typer.Argument(..., help="featuregraph DuckDB file.")) -> None:
    """Upgrade DB to this featuregraph's schema (opening it for writing does this too)."""
    from featuregraph.store.db import open_database
    from featuregraph.store.migrate import current_version

    with open_database(db) as database:
        typer.echo(f"{db}: schema version {current_version(database)}")


def _features(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    from featuregraph.store.models import Node

    for name in names:
        try:
            Node.parse(name)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    return names


def _coefficients(text: str) -> list[float]:
    """``"0:2:0.25"`` (start:stop:step, stop included) or ``"0,0.5,1,2"``."""
    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            if step <= 0:
                raise ValueError
            n = int(round((stop - start) / step))
            return [round(start + i * step, 10) for i in range(n + 1)]
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise InputError(f"--coefficients: expected START:STOP:STEP or a comma list, got {text!r}") from None


@app.command()
@user_errors
def noise(
    db: Path = typer.Argument(..., help="featuregraph DuckDB file."),
    corpus: Path = typer.Option(..., "--corpus", help="Unrelated contexts: .txt or .jsonl."),
    run: Optional[int] = typer.Option(None, "--run", help="Run id (default: the newest run)."),
    contexts: int = typer.Option(200, "--contexts", help="Contexts sampled from the corpus."),
    context_tokens: int = typer.Option(32, "--context-tokens", help="Tokens kept per context."),
    features: Optional[str] = typer.Option(None, "--features", help="Features to baseline, e.g. 3.12,4.7,4.att.3 (default: all in the run's edges)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the context sampling and of the thinning of samples."),
    min_read_position: int = typer.Option(3, "--min-read-position", help="Earliest position read in a context (0 is BOS)."),
    max_samples: int = typer.Option(2000, "--max-samples", help="Null samples kept per feature."),
    inject_inactive: bool = typer.Option(False, "--inject-inactive/--no-inject-inactive", help="Null by injection for features that never fire in the contexts."),
    device: Optional[str] = typer.Option(None, "--device", help="Default: the run's device setting."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Cross-context noise baseline of a run's features, with p-values (views edge_snr / logit_snr)."""
    _needs_ingest_extra("noise")
    from featuregraph.ingest.experiments import run_noise
    from featuregraph.ingest.noise import NoiseSpec

    spec = NoiseSpec(
        str(corpus), contexts, context_tokens, seed, tuple(_features(features)) if features else (),
        min_read_position=min_read_position, max_samples=max_samples, inject_inactive=inject_inactive,
    )  # fmt: skip
    experiment_id, summary = run_noise(db, spec, run, device, progress=not quiet)
    typer.echo(
        f"noise experiment {experiment_id}: {summary['features']} features in {summary['contexts']} contexts; "
        f"{summary['features_active']} fire in them, {summary['features_injected']} injected, "
        f"{summary['features_without_null']} without a null (their p-values are NULL); "
        f"median {summary['median_samples']:.0f} samples per feature; {summary['contexts_per_s']} contexts/s"
    )


@app.command()
@user_errors
def validate(
    db: Path = typer.Argument(..., help="featuregraph DuckDB file."),
    path: str = typer.Option(..., "--path", help="Features to ablate together, e.g. 1.120,2.77,2.att.5 (LAYER.FEATURE, LAYER.SITE.FEATURE)."),
    prompts: Path = typer.Option(..., "--prompts", help="New prompts: .txt or .jsonl (an 'answer' key is followed)."),
    run: Optional[int] = typer.Option(None, "--run", help="Run id (default: the newest run)."),
    control: str = typer.Option(
        "matched",
        "--control",
        help="matched (active features at the same sites, closest in activation), random (random active features) "
        "or zero (features 0.. at the same sites, active or not).",
    ),
    coefficient: float = typer.Option(0.0, "--coefficient", help="Ablation coefficient c of the path and control features."),
    top_k: int = typer.Option(5, "--top-k", help="Tokens recorded per prompt and arm."),
    seed: int = typer.Option(0, "--seed", help="Seed for drawing the random control."),
    device: Optional[str] = typer.Option(None, "--device", help="Default: the run's device setting."),
) -> None:
    """Ablate a path jointly on new prompts, next to a control at the same sites (matched in activation by default);
    prints the answer's log-prob change against the control's first."""
    _needs_ingest_extra("validate")
    from featuregraph.ingest.experiments import run_validation
    from featuregraph.ingest.validation import ValidationSpec
    from featuregraph.query.validation import validation_lines

    spec = ValidationSpec(tuple(_features(path)), str(prompts), control, coefficient, top_k, seed)
    experiment_id, s = run_validation(db, spec, run_id=run, device=device)
    typer.echo(f"validation experiment {experiment_id}: {s['prompts']} prompts, {s['control']} control")
    for line in validation_lines(s):
        typer.echo(line)


@app.command()
@user_errors
def curve(
    db: Path = typer.Argument(..., help="featuregraph DuckDB file."),
    up: str = typer.Option(..., "--up", help="Upstream feature (L.F, or L.att.F / L.mlp.F / L.tc.F) whose coefficient varies."),
    prompt: str = typer.Option(..., "--prompt", help="The context."),
    down: Optional[str] = typer.Option(None, "--down", help="Downstream feature (L.F or L.SITE.F) at the next SAE site."),
    coefficients: str = typer.Option("0:2:0.25", "--coefficients", help="START:STOP:STEP or a comma list."),
    token: list[str] = typer.Option([], "--token", help="Next token to follow (repeatable; default: clean top 5)."),
    run: Optional[int] = typer.Option(None, "--run", help="Run id (default: the newest run)."),
    device: Optional[str] = typer.Option(None, "--device", help="Default: the run's device setting."),
) -> None:
    """Response curve: scale UP by each coefficient and record DOWN's activation and next-token probabilities."""
    _needs_ingest_extra("curve")
    from featuregraph.ingest.experiments import run_curve

    _features(up if down is None else f"{up},{down}")
    experiment_id, s = run_curve(db, up, down, prompt, _coefficients(coefficients), token, run, device)
    fit = f"; down = {s['slope']:.4g} * c + {s['intercept']:.4g} (r2 {s['r2']:.4f})" if "slope" in s else ""
    typer.echo(f"curve experiment {experiment_id}: {s['points']} coefficients{fit}")


@app.command()
@user_errors
def dfa(
    db: Path = typer.Argument(..., help="featuregraph DuckDB file."),
    run: Optional[int] = typer.Option(None, "--run", help="Run id (default: the newest run)."),
    top_k: int = typer.Option(16, "--top-k", help="Head-source parts stored per (prompt, feature); the rest is summed into one row."),
    resid_top_k: int = typer.Option(16, "--resid-top-k", help="Residual features stored per recursed head-source part."),
    recurse: int = typer.Option(4, "--recurse", help="Largest head-source parts split over the residual SAE (0: none)."),
    max_features: int = typer.Option(64, "--max-features", help="Attention features per prompt, the most active first."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N prompts."),
    device: Optional[str] = typer.Option(None, "--device", help="Default: the run's device setting."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Direct feature attribution: split each attention-output SAE feature active at the read position by
    head and source token, and the largest parts by residual SAE feature (tables dfa_features, dfa_parts)."""
    _needs_ingest_extra("dfa")
    from featuregraph.ingest.dfa import DfaSettings
    from featuregraph.ingest.dfa_run import run_dfa

    if limit is not None and limit < 1:
        raise InputError(f"--limit must be >= 1, got {limit}")
    settings = DfaSettings(top_k=top_k, resid_top_k=resid_top_k, recurse=recurse, max_features=max_features)
    s = run_dfa(db, run, settings, device, limit, progress=not quiet)
    typer.echo(f"dfa run {s['run_id']}: {s['features']} attention features in {s['prompts']} prompts, "
               f"{s['rows']} parts stored ({s['seconds']} s)")  # fmt: skip


@app.command()
@user_errors
def dashboard(
    db: Path = typer.Argument(..., help="featuregraph DuckDB file (opened read-only)."),
    port: int = typer.Option(8501, "--port", help="Port to serve on."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address to listen on (0.0.0.0: every interface)."),
    headless: bool = typer.Option(False, "--headless", help="Do not open a browser."),
) -> None:
    """Explore DB in a browser: graphs, recurring paths, features, noise, SQL (Streamlit)."""
    from featuregraph.dashboard.launch import serve

    raise typer.Exit(code=serve(db, port, address, headless))


@app.command()
@user_errors
def demo(
    db: Path = typer.Option(Path("featuregraph-demo.duckdb"), "--db", help="DuckDB file to write (created if missing)."),
    per_tag: int = typer.Option(0, "--per-tag", help="The first N prompts of each task (0: all 100)."),
    noise_contexts: int = typer.Option(64, "--noise-contexts", help="Filler contexts for the noise baseline."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    open_dashboard: Optional[bool] = typer.Option(
        None, "--open/--no-open", help="Open the dashboard afterwards (default: when run in a terminal)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Sweep the bundled toy model's task prompts (parentheses, acronyms, IOI) into DB, with a noise baseline; validate
    each task's top path on held-out prompts against a matched control."""
    _needs_ingest_extra("demo")
    from featuregraph.demo.run import run_demo

    s = run_demo(db, per_tag or None, noise_contexts, device, progress=not quiet, say=typer.echo)
    tags = ", ".join(f"{n} {t}" for t, n in s.prompts_per_tag.items())
    typer.echo(f"run {s.run_id} in {s.db_path}: {tags} prompts; {s.edges:,} edges")
    if s.noise_experiment is not None:
        typer.echo(f"noise baseline: experiment {s.noise_experiment} (see the edge_snr and logit_snr views)")
    if s.significance:
        typer.echo("stored effects significant against the noise baseline (share of those with a null; "
                   "filler-heldout is unrelated text, so about 1% or less is the calibrated answer):")
        for r in s.significance:
            typer.echo(
                f"  {r['tag']:<15} {r['effect']:<13} {r['with_null']:>9,} of {r['stored']:>9,} with a null   "
                f"p<0.01: {r['share_p_below_001']:6.1%}   p<0.001: {r['share_p_below_0001']:6.1%}"
            )
    _echo_edge_kinds(s.edge_kinds)
    for tag, paths in s.paths_per_tag.items():
        typer.echo(f"{tag}: most {tag}-specific recurring 2-edge paths (prompts containing it, per task)")
        for p in paths:
            where = ", ".join(f"{t} {n}/{s.prompts_per_tag[t]}" for t, n in p.support.items())
            typer.echo(f"  {p.path}  signs {list(p.signs)}  {where}")
        if not paths:
            typer.echo("  none: no recurring path is more common in this task than in the others")
    _echo_validations(s.validations)
    if s.attention_run is not None:
        from featuregraph.demo.attention_report import format_report

        typer.echo(f"attention-output SAEs (run {s.attention_run}, IOI prompts): the attention features whose "
                   "ablation lowers the answer most, their heads (summed DFA parts) and where DFA points:")
        for line in format_report(s.attention_report):
            typer.echo(line)
    typer.echo(f"explore it: featuregraph dashboard {s.db_path}   or   featuregraph sql {s.db_path} \"SELECT ...\"")
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if open_dashboard or (open_dashboard is None and interactive):
        from featuregraph.dashboard.launch import serve

        raise typer.Exit(code=serve(db, 8501, "127.0.0.1", False))


def _echo_edge_kinds(kinds: list[dict]) -> None:
    """What each prompt's strongest edges are: a downstream feature switched on or off, or graded."""
    from featuregraph.demo.run import STRONGEST_EDGES

    if kinds:
        typer.echo(f"each prompt's {STRONGEST_EDGES} strongest edges: the downstream feature switched off / "
                   "switched on / active before and after (graded change):")
    for k in kinds:
        n = max(k["edges"], 1)
        typer.echo(f"  {k['tag']:<15} {k['leaves'] / n:6.1%} off   {k['enters'] / n:6.1%} on   "
                   f"{k['graded'] / n:6.1%} graded   ({k['edges']:,} edges)")


def _echo_validations(validations) -> None:
    """The demo's closing table: each task's top path against a matched control on held-out prompts."""
    from featuregraph.demo.run import EFFECT_FACTOR
    from featuregraph.query.validation import lead_line

    if not validations:
        typer.echo("no task has a specific path to validate")
    for v in validations:
        typer.echo(f"validation of {v.tag} path #{v.rank} {v.path} on {v.prompts} held-out {v.tag} prompts "
                   f"(experiment {v.experiment_id}, matched control):")
        if v.dlogp is None:
            typer.echo("  no held-out prompt names an answer")
            continue
        typer.echo("  " + lead_line(v.dlogp, "answer log-prob change"))
        verdict = "met" if v.target_met else "NOT met"
        typer.echo(f"  target (path median <= {EFFECT_FACTOR:g}x control median, path interval below the "
                   f"control median): {verdict}")
        for w in v.warnings:
            typer.echo(f"  warning: {w}")
    tried = Counter(v.tag for v in validations)
    if any(n > 1 for n in tried.values()):
        met = Counter(v.tag for v in validations if v.target_met)
        typer.echo("paths meeting the target per task (of those tried; with several tried, one meeting it by chance "
                   "is likelier than one test's 5%): " + ", ".join(f"{t} {met[t]}/{n}" for t, n in tried.items()))


def _register_subcommands() -> None:
    from featuregraph.query.cli import register
    from featuregraph.query.graph_cli import register as register_graph_commands

    register(app)
    register_graph_commands(app)


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
