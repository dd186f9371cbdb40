"""`featuregraph dfa`: direct feature attribution for a stored run's attention-output SAE features.

Reads the run's prompts (their stored token ids) and reloads its model and SAEs the way the
experiments do (ingest/reload.py), computes DFA at the run's read position without holding the
database, and writes every prompt's rows in one transaction at the end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from featuregraph.errors import InputError
from featuregraph.ingest.dfa import DfaSettings, dfa_rows, hook_z_layer
from featuregraph.ingest.loading import residual_layer
from featuregraph.ingest.reload import load_run, resolve_run
from featuregraph.ingest.sites import RESID_HOOK
from featuregraph.store.db import open_database
from featuregraph.store.dfa import DFA_TABLES, run_prompt_tokens, run_sae_hooks, write_dfa
from featuregraph.store.tables import value_columns


def read_position(setting: int, n_tokens: int) -> int:
    """The sweep's read position for a prompt of ``n_tokens`` (-1: the last token)."""
    read = n_tokens - 1 if setting == -1 else setting
    if not 0 <= read < n_tokens:
        raise InputError(f"read position {read} is past the prompt's {n_tokens} tokens")
    return read


def prompt_dfa(
    model: Any, sites: Sequence[Any], token_ids: Sequence[int], read: int, settings: DfaSettings
) -> dict[str, dict[str, list]]:
    """One prompt's DFA rows for every attention-output SAE among ``sites`` (objects with
    ``hook_name`` and ``sae``, as ingest/loading.py's SaeSite), recursing into the residual SAE
    that reads ``blocks.L.hook_resid_pre`` (or ``blocks.(L-1).hook_resid_post``) when the run has one.
    Returns {table: columns} for ``dfa_features`` and ``dfa_parts`` (no run_id / prompt_id)."""
    resid = {residual_layer(s.hook_name): s.sae for s in sites if RESID_HOOK.match(s.hook_name)}
    device = next(model.parameters()).device
    tokens = torch.tensor([list(token_ids)], dtype=torch.long, device=device)
    out: dict[str, dict[str, list]] = {t: {c: [] for c in value_columns(t)} for t in DFA_TABLES}
    for site in sites:
        layer = hook_z_layer(site.hook_name)
        if layer is None:
            continue
        rows = dfa_rows(
            model, site.sae, tokens, read, settings, resid.get(layer), layer if layer in resid else None
        )
        for table, columns in rows.items():
            for c, values in columns.items():
                out[table][c].extend(values)
    return out


def run_dfa(
    db_path: str | Path,
    run_id: int | None = None,
    settings: DfaSettings = DfaSettings(),
    device: str | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """DFA of run ``run_id``'s (default: the newest run's) attention features on its prompts
    (the first ``limit``). Returns a summary: prompts, features, rows, seconds."""
    started = time.perf_counter()
    with open_database(db_path, read_only=True) as db:
        run_id = resolve_run(db, run_id)
        hooks = run_sae_hooks(db, run_id)
        if not any(hook_z_layer(h) is not None for _, h in hooks):
            names = ", ".join(h for _, h in hooks) or "none"
            raise InputError(
                f"run {run_id} has no attention-output SAE (blocks.L.attn.hook_z) to attribute; its SAEs: {names}"
            )
        prompts = run_prompt_tokens(db, run_id)[:limit]
        if not prompts:
            raise InputError(f"run {run_id} has no stored prompts yet")
        ctx = load_run(db, run_id, device)
    model, sites = ctx.loaded.model, ctx.loaded.sites
    by_prompt = {}
    n_features = 0
    for prompt_id, token_ids in tqdm(prompts, unit="prompt", disable=not progress, desc=f"dfa run {run_id}"):
        rows = prompt_dfa(
            model, sites, token_ids, read_position(ctx.config.sweep.read_position, len(token_ids)), settings
        )
        by_prompt[prompt_id] = rows
        n_features += len(rows["dfa_features"]["feature"])
    with open_database(db_path) as db:
        n_rows = write_dfa(db, run_id, by_prompt)
    seconds = time.perf_counter() - started
    return {
        "run_id": run_id,
        "prompts": len(prompts),
        "features": n_features,
        "rows": n_rows,
        "seconds": round(seconds, 2),
    }


__all__ = ["prompt_dfa", "read_position", "run_dfa"]
