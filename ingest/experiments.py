"""Running experiments on a stored run and landing them in its database.

Each command reads what it needs with a read-only connection, computes without holding the
database, and writes the experiment in one short transaction at the end, so readers (and the
dashboard) are never blocked for long and a crash leaves no partial experiment.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import featuregraph
from featuregraph.errors import InputError
from featuregraph.ingest.noise import NoiseSpec, noise_baseline, sample_contexts
from featuregraph.ingest.prompts import RawPrompt, read_prompts, tokenize_prompts
from featuregraph.ingest.reload import RunContext, load_run, require_residual_sites, resolve_run
from featuregraph.ingest.validation import CurveSpec, ValidationSpec, response_curve, validate
from featuregraph.store.db import Database, open_database
from featuregraph.store.experiments import (
    edge_features,
    edge_targets,
    logit_targets,
    run_prompt_texts,
    typical_activations,
    write_experiment,
)
from featuregraph.store.models import Node
from featuregraph.store.runs import now

# The run's SAE sites as stored, so that feature names are checked before any model loads.
RUN_SITES = "SELECT layer, d_sae FROM run_saes WHERE run_id = ? ORDER BY layer"
RUN_SITE_KINDS = "SELECT DISTINCT site_kind FROM run_saes WHERE run_id = ? AND site_kind <> 'resid' ORDER BY 1"


def check_features(db: Database, run_id: int, features: Sequence[str]) -> list[int]:
    """Each feature's SAE site index in run ``run_id``, read from the database (no model loads).

    Raises InputError for a run with non-residual sites (see ``require_residual_sites``), a name that does not parse, a layer without an SAE in the run, or a
    feature index past that SAE's width (the same messages as once the model is loaded).
    """
    require_residual_sites([k for (k,) in db.fetchall(RUN_SITE_KINDS, [run_id])], run_id)
    sites = db.fetchall(RUN_SITES, [run_id])
    out = []
    for name in features:
        try:
            node = Node.parse(name)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        for k, (layer, d_sae) in enumerate(sites):
            if layer == node.layer:
                if not 0 <= node.feature < d_sae:
                    raise InputError(f"feature {node} is out of range: layer {layer}'s SAE has {d_sae} features")
                out.append(k)
                break
        else:
            layers = ", ".join(str(layer) for layer, _ in sites)
            raise InputError(f"no SAE at layer {node.layer} in run {run_id} (layers: {layers})")
    return out


def _provenance(ctx: RunContext, started) -> dict[str, Any]:
    return {
        "device": ctx.loaded.device,
        "featuregraph_version": featuregraph.__version__,
        "torch_version": torch.__version__,
        "started_at": started,
    }


def _first_token(ctx: RunContext, text: str) -> int:
    ids = ctx.loaded.model.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise InputError(f"token {text!r} is empty once tokenized")
    return int(ids[0])


def run_noise(
    db_path: str | Path, spec: NoiseSpec, run_id: int | None = None, device: str | None = None, progress: bool = True
) -> tuple[int, dict]:
    """Noise baseline for a run's features in ``spec.corpus``; returns (experiment_id, summary)."""
    started = now()
    corpus = read_prompts(spec.corpus)
    with open_database(db_path, read_only=True) as db:
        run_id = resolve_run(db, run_id)
        check_features(db, run_id, spec.features)
        features = [(n.layer, n.feature) for n in map(Node.parse, spec.features)] or edge_features(db, run_id)
        e_targets, l_targets = edge_targets(db, run_id), logit_targets(db, run_id)
        typical = typical_activations(db, run_id) if spec.inject_inactive else {}
        exclude = run_prompt_texts(db, run_id) if spec.exclude_run_prompts else frozenset()
        ctx = load_run(db, run_id, device)
    if not features:
        raise InputError(f"run {run_id} has no edges yet, so no features to baseline; pass --features")
    for layer, f in features:
        ctx.site_index(Node(layer, f))
    contexts = sample_contexts(ctx, corpus, spec, exclude)
    t = time.perf_counter()
    tables = noise_baseline(ctx, contexts, features, e_targets, l_targets, spec, typical, progress=progress)
    seconds = time.perf_counter() - t
    nf = tables["noise_features"]
    summary = {
        "contexts": len(contexts),
        "features": len(features),
        "features_active": int((nf["n_active"] > 0).sum()),
        "features_injected": int(sum(m == "injected" for m in nf["null_mode"])),
        "features_without_null": int((nf["n_samples"] == 0).sum()),
        "median_samples": float(np.median(nf["n_samples"][nf["n_samples"] > 0])) if (nf["n_samples"] > 0).any() else 0.0,
        "edges_with_noise": len(tables["noise_edges"]["mean"]),
        "seconds": round(seconds, 3),
        "contexts_per_s": round(len(contexts) / seconds, 3) if seconds > 0 else None,
    }
    with open_database(db_path) as db:
        experiment_id = write_experiment(db, run_id, "noise", dataclasses.asdict(spec), summary, _provenance(ctx, started), tables)
    return experiment_id, summary


def run_validation(
    db_path: str | Path,
    spec: ValidationSpec,
    prompts: list[RawPrompt] | None = None,
    run_id: int | None = None,
    device: str | None = None,
) -> tuple[int, dict]:
    """Validate a feature set on new prompts against a control; returns (experiment_id, summary).

    A prompt's expected answer may be given as ``answer`` in its .jsonl line (its first token counts).
    """
    started = now()
    raw = prompts if prompts is not None else read_prompts(spec.prompts_source)
    with open_database(db_path, read_only=True) as db:
        run_id = resolve_run(db, run_id)
        check_features(db, run_id, spec.features)
        ctx = load_run(db, run_id, device)
    inputs = tokenize_prompts(ctx.loaded.model, raw, ctx.loaded.prepend_bos, spec.prompts_source)
    answers = [
        _first_token(ctx, str(p.metadata["answer"])) if p.metadata and p.metadata.get("answer") is not None else None
        for p in raw
    ]
    tables, summary = validate(ctx, spec, inputs, answers)
    with open_database(db_path) as db:
        experiment_id = write_experiment(
            db, run_id, "validation", dataclasses.asdict(spec), summary, _provenance(ctx, started), tables
        )
    return experiment_id, summary


def run_curve(
    db_path: str | Path,
    up: str,
    down: str | None,
    prompt: str,
    coefficients: list[float],
    tokens: list[str] | None = None,
    run_id: int | None = None,
    device: str | None = None,
) -> tuple[int, dict]:
    """Response curve of ``up`` (and ``down``, at the next site) on one prompt."""
    started = now()
    spec = CurveSpec(up=up, down=down, prompt=prompt, coefficients=tuple(coefficients))
    with open_database(db_path, read_only=True) as db:
        run_id = resolve_run(db, run_id)
        sites = check_features(db, run_id, [up] if down is None else [up, down])
        if down is not None and sites[1] != sites[0] + 1:
            raise InputError(f"{down} is not at the SAE site right after {up}'s (edges join adjacent sites)")
        ctx = load_run(db, run_id, device)
    spec = dataclasses.replace(spec, tokens=tuple(_first_token(ctx, t) for t in tokens or []))
    (prompt_input,) = tokenize_prompts(ctx.loaded.model, [RawPrompt(prompt, 1)], ctx.loaded.prepend_bos, "--prompt")
    tables, summary = response_curve(ctx, spec, prompt_input)
    with open_database(db_path) as db:
        experiment_id = write_experiment(db, run_id, "curve", dataclasses.asdict(spec), summary, _provenance(ctx, started), tables)
    return experiment_id, summary
