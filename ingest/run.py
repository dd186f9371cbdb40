"""An ingest run: load, validate, sweep every prompt, and land the results in DuckDB.

Order matters for "nothing half-written": prompts are read and the model and SAEs loaded
and checked, and every prompt tokenized, *before* the database is opened. Results are
committed in groups of whole prompts (see :func:`store.runs.write_prompt_results`), so a
killed run loses at most the prompts in flight, and re-running the same command resumes
the same run (found by its ``run_key``) with the prompts still missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

import featuregraph
from featuregraph.ingest.config import RunConfig
from featuregraph.ingest.delta import load_dtype, make_sweeper, run_precision
from featuregraph.ingest.loading import Loaded, load_all
from featuregraph.ingest.prompts import (
    PreparedPrompts,
    RawPrompt,
    prepare_prompts,
    prompts_sha256,
    read_prompts,
)
from featuregraph.ingest.pruning import prune_results
from featuregraph.ingest.sites import edge_targets
from featuregraph.ingest.writer_thread import WriterThread
from featuregraph.store.db import Database, open_database
from featuregraph.store.ingest_errors import record_ingest_errors
from featuregraph.store.runs import (
    SAE_FIELDS,
    create_run,
    done_prompt_ids,
    find_run,
    finish_run,
    resume_run,
    write_prompt_results,
)  # fmt: skip
from featuregraph.store.snapshot import writer_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSummary:
    run_id: int
    db_path: str
    n_prompts: int
    n_swept: int  # prompts swept by this invocation (the rest had landed before)
    seconds: float
    resumed: bool
    n_left_out: int = 0  # prompts listed in ingest_errors (bad ones recorded, duplicates)

    @property
    def prompts_per_second(self) -> float:
        return self.n_swept / self.seconds if self.seconds > 0 else 0.0


def run_key(loaded: Loaded, config: RunConfig, prompts_hash: str, too_long: str = "reject") -> str:
    """Identity of a run: same model, SAEs (by weights), semantics and prompts -> same key.

    How many workers sweep it, and whether bad prompts stop it or are recorded, are not
    part of it: they do not change what lands.
    """
    ident = {
        "model": loaded.model_provenance,
        "flags": loaded.flags,
        "saes": [s.provenance["sha256"] for s in loaded.sites],
        "sweep": config.sweep.semantic(),
        "dtype": config.dtype,
        "prepend_bos": loaded.prepend_bos,
        "prompts": prompts_hash,
    }
    if too_long != "reject":
        ident["too_long"] = too_long
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PreparedRun:
    """Everything known before the database is opened: prompts read and checked, the model
    and SAEs loaded, the run's key."""

    source: str
    loaded: Loaded
    prompts: PreparedPrompts
    key: str
    too_long: str = "reject"
    bad_prompts: str = "error"
    precision: str = "float32"  # what the sweep computes in (ingest/delta.py ``make_sweeper``)


def prepare_run(
    prompts: str | Path | list[RawPrompt],
    config: RunConfig,
    bad_prompts: str = "error",
    too_long: str = "reject",
    device: str | None = None,
) -> PreparedRun:
    """Read, load and tokenize (``device``: where to load the model, default the config's)."""
    source = str(prompts) if isinstance(prompts, (str, Path)) else "<list>"
    raw = read_prompts(prompts, bad_prompts) if isinstance(prompts, (str, Path)) else list(prompts)
    # A bfloat16/float16 run loads in float32: delta mode keeps the clean pass in float32, and a run
    # it cannot serve is cast down when its sweeper is made (ingest/delta.py).
    loaded = load_all(config.model, config.saes, device or config.device, load_dtype(config.dtype), config.prepend_bos)
    edge_targets(loaded.sites, config.sweep.edge_target)  # a named target must be one of the sites
    precision = run_precision(loaded.model, loaded.sites, config.sweep, loaded.prepend_bos, config.dtype)
    prepared = prepare_prompts(
        loaded.model, raw, loaded.prepend_bos, source, bad_prompts, too_long, config.sweep.read_position
    )
    key = run_key(loaded, config, prompts_sha256(raw), too_long)
    return PreparedRun(source, loaded, prepared, key, too_long, bad_prompts, precision)


def open_run(db: Database, prep: PreparedRun, config: RunConfig, device: str) -> tuple[int, set[int], bool]:
    """Find the run by its key (resume) or create it; record its ingest errors.

    Returns ``(run_id, prompt ids already stored, resumed)``.
    """
    found = find_run(db, prep.key)
    if found is None:
        row = _run_row(prep, config)
        row["device"] = device
        run_id = create_run(
            db,
            prep.key,
            row,
            [{k: s.provenance[k] for k in SAE_FIELDS} for s in prep.loaded.sites],
            _vocab(prep.loaded.model),
        )
        done: set[int] = set()
    else:
        run_id = found[0]
        done = done_prompt_ids(db, run_id)
        resume_run(db, run_id, device)
    record_ingest_errors(db, run_id, [e.row() for e in prep.prompts.errors])
    return run_id, done, found is not None


def _run_row(prep: PreparedRun, config: RunConfig) -> dict:
    """The new run's row; its settings go in ``config`` only (the sweep's columns of ``runs``
    are read out of it)."""
    loaded = prep.loaded
    m = loaded.model.cfg
    return {
        **loaded.model_provenance,
        "model_config": {
            "n_layers": m.n_layers,
            "d_model": m.d_model,
            "d_vocab": m.d_vocab,
            "n_ctx": m.n_ctx,
            "model_name": m.model_name,
            **loaded.flags,
        },
        "prompts_source": prep.source,
        "n_prompts": len(prep.prompts.inputs),
        "prepend_bos": loaded.prepend_bos,
        "device": loaded.device,
        "config": config.stored(prep.too_long, prep.bad_prompts, prep.precision),
        "featuregraph_version": featuregraph.__version__,
        "torch_version": torch.__version__,
        "sae_lens_version": pkg_version("sae-lens"),
        "transformer_lens_version": pkg_version("transformer-lens"),
    }


def _vocab(model) -> list[str]:
    tok = model.tokenizer
    n = int(model.cfg.d_vocab)
    known = min(n, len(tok))
    strings = tok.batch_decode([[i] for i in range(known)])
    return strings + [f"<{i}>" for i in range(known, n)]


def ingest(
    db_path: str | Path,
    prompts: str | Path | list[RawPrompt],
    config: RunConfig,
    progress: bool = True,
    commit_every: int = 16,
    commit_seconds: float = 5.0,
    prompts_per_forward: int = 8,
    on_commit: Callable[[list[int]], None] | None = None,
    bad_prompts: str = "error",
    too_long: str = "reject",
    background_writes: bool = True,
) -> IngestSummary:
    """Sweep ``prompts`` with the model and SAEs of ``config`` into the database at ``db_path``.

    ``prompts`` is a .txt/.jsonl/.parquet path, an ``hf:`` dataset or a list of
    :class:`RawPrompt`. Results are committed every ``commit_every`` prompts or
    ``commit_seconds`` seconds, whichever comes first; up to ``prompts_per_forward`` prompts
    of similar length share forward passes. ``bad_prompts`` and ``too_long``: see
    :func:`ingest.prompts.prepare_prompts`. ``background_writes``: results are written by a
    thread (ingest/writer_thread.py) while the next prompts are swept; a write error ends the run
    as one line, nothing half-written.
    """
    prep = prepare_run(prompts, config, bad_prompts, too_long)
    loaded, inputs = prep.loaded, prep.prompts.inputs
    sweeper, _ = make_sweeper(loaded.model, loaded.sites, config.sweep, loaded.prepend_bos, config.dtype)

    db = open_database(db_path)
    # Readers read its snapshots while this ingest holds the file; they go when it is closed.
    with writer_session(db_path, {"what": "featuregraph ingest (single process)", "holds_lock": "for its whole run"}, db) as snapshots:
        run_id, done, resumed = open_run(db, prep, config, loaded.device)
        snapshots.announce(run_id=run_id)
        snapshots.start(db)
        # Groups are formed over the whole prompt list and committed whole, so a resumed
        # run batches every remaining prompt exactly as an uninterrupted run would have.
        groups = [[p for p in g if p.prompt_id not in done] for g in _groups(inputs, prompts_per_forward)]
        groups = [g for g in groups if g]
        todo = [p for g in groups for p in g]
        log.info("run %d: %d prompts, %d to sweep", run_id, len(inputs), len(todo))
        start = time.perf_counter()
        pending = []
        last_commit = time.monotonic()

        def write(batch: list) -> None:
            write_prompt_results(db, run_id, batch)
            snapshots.after_commit(db)  # on the thread that owns the connection
            ids = [r.prompt_id for r in batch]
            log.info("committed prompts %s", ids)
            if on_commit:
                on_commit(ids)

        def flush() -> None:
            nonlocal pending, last_commit
            if writer is not None:
                writer.submit(pending)
            else:
                write(pending)
            pending = []
            last_commit = time.monotonic()

        status = "failed"
        # The writer thread owns the connection until it is closed: the main thread only sweeps.
        writer = WriterThread(write) if background_writes else None
        try:
            with writer or contextlib.nullcontext(), tqdm(total=len(todo), unit="prompt", disable=not progress, desc=f"run {run_id}") as bar:
                for group in groups:
                    pending.extend(prune_results(prep.prompts.annotate(sweeper.sweep_many(group)), config.sweep))
                    bar.update(len(group))
                    if len(pending) >= commit_every or time.monotonic() - last_commit >= commit_seconds:
                        flush()
                if pending:
                    flush()
            if writer is not None:
                log.info("sweep waited %.2f s on the writer (%.2f s writing)", writer.wait_s, writer.write_s)
            status = "complete"
        finally:
            if status != "complete":
                # Whatever was committed stays; the next identical command resumes from there.
                pending = []
            finish_run(db, run_id, status)
        return IngestSummary(
            run_id, str(db_path), len(inputs), len(todo), time.perf_counter() - start, resumed, len(prep.prompts.errors)
        )


def _groups(prompts: list, size: int) -> list[list]:
    """Consecutive groups of ``size`` prompts, each sorted by length, so padding stays small
    while commits still follow input order closely."""
    groups = []
    for start in range(0, len(prompts), size * 8):
        window = sorted(prompts[start : start + size * 8], key=lambda p: len(p.token_ids))
        groups += [window[i : i + size] for i in range(0, len(window), size)]
    return groups

