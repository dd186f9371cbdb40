"""Runs: creating, resuming and closing them, and writing their prompts' results.

A run is identified by its ``run_key`` (a hash of its semantic settings and prompts), so
re-running the same ingest command finds the same run and sweeps only the prompts that
have not landed yet. Each call to :func:`write_prompt_results` is one transaction: a
prompt's rows land together with its ``prompts`` row, or not at all.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np
import pyarrow as pa

from featuregraph.store.db import Database
from featuregraph.store.models import PROMPT_TABLES, PromptResult
from featuregraph.store.run_config import CONFIG_VERSION
from featuregraph.store.summary import append_delta, maybe_fold
from featuregraph.store.tables import arrow_table, table

FIND_RUN = "SELECT run_id, status FROM runs WHERE run_key = ?"

_RUNS = table("runs")
# What a caller supplies for a new run: every stored column but the ones create_run sets itself.
RUN_FIELDS = tuple(
    c for c in _RUNS.written
    if c not in ("run_id", "run_key", "status", "config_version", "started_at", "finished_at")
)  # fmt: skip
# Column names come from the table spec, never from input.
INSERT_RUN = (
    f"INSERT INTO runs (run_key, status, config_version, started_at, {', '.join(RUN_FIELDS)}) "
    f"VALUES ($run_key, 'running', $config_version, $started_at, {', '.join('$' + c for c in RUN_FIELDS)}) "
    "RETURNING run_id"
)
# The settings runs reads out of config (generated columns): NULL means config lacks one.
RUN_SETTINGS = f"SELECT {', '.join(_RUNS.generated)} FROM runs WHERE run_id = ?"
SAE_FIELDS = tuple(c for c in table("run_saes").written if c != "run_id")
INSERT_RUN_SAE = (
    f"INSERT INTO run_saes (run_id, {', '.join(SAE_FIELDS)}) "
    f"VALUES ($run_id, {', '.join('$' + c for c in SAE_FIELDS)})"
)
RESUME_RUN = "UPDATE runs SET status = 'running', device = ?, finished_at = NULL WHERE run_id = ?"
FINISH_RUN = "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?"
DONE_PROMPTS = "SELECT prompt_id FROM prompts WHERE run_id = ?"



def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def find_run(db: Database, run_key: str) -> tuple[int, str] | None:
    """``(run_id, status)`` of the run with this key, if one exists."""
    row = db.fetchone(FIND_RUN, [run_key])
    return (int(row[0]), str(row[1])) if row else None


def create_run(
    db: Database, run_key: str, run: dict[str, Any], saes: list[dict[str, Any]], vocab: list[str]
) -> int:
    """Insert a run, its SAEs and its vocabulary in one transaction; return the run_id.

    ``run`` holds :data:`RUN_FIELDS`; its ``config`` is a dict in the current layout
    (store/run_config.py), the one place the run's settings are stored.
    """
    missing = set(RUN_FIELDS) - set(run)
    if missing:
        raise ValueError(f"run row lacks {sorted(missing)}")
    params = {k: run[k] for k in RUN_FIELDS}
    for key in ("model_config", "config"):
        params[key] = json.dumps(params[key], sort_keys=True)
    params.update(run_key=run_key, config_version=CONFIG_VERSION, started_at=now())
    with db.transaction():
        run_id = int(db.fetchone(INSERT_RUN, params)[0])
        settings = dict(zip(_RUNS.generated, db.fetchone(RUN_SETTINGS, [run_id]), strict=True))
        absent = sorted(k for k, v in settings.items() if v is None)
        if absent:
            raise ValueError(f"run config lacks the settings {absent} (see store/run_config.py)")
        for sae in saes:
            row = dict(sae, run_id=run_id, config=json.dumps(sae["config"], sort_keys=True))
            db.execute(INSERT_RUN_SAE, row)
        tokens = {"token_id": np.arange(len(vocab)), "token": vocab}
        db.insert_arrow("vocab", arrow_table("vocab", tokens, run_id=run_id))
    return run_id


def resume_run(db: Database, run_id: int, device: str) -> None:
    db.execute(RESUME_RUN, [device, run_id])


def finish_run(db: Database, run_id: int, status: str) -> None:
    """Close a run as ``complete`` or ``failed``."""
    db.execute(FINISH_RUN, [status, now(), run_id])


def done_prompt_ids(db: Database, run_id: int) -> set[int]:
    """Prompts of the run whose results have landed."""
    return {int(r[0]) for r in db.fetchall(DONE_PROMPTS, [run_id])}


def _prompt_rows(run_id: int, results: Iterable[PromptResult]) -> pa.Table:
    results = list(results)
    stamp = now()
    columns = {
        "run_id": [run_id] * len(results),
        "prompt_id": [r.prompt_id for r in results],
        "text": [r.text for r in results],
        "text_sha256": [text_sha256(r.text) for r in results],
        "tag": [r.tag for r in results],
        "metadata": [json.dumps(r.metadata) if r.metadata is not None else None for r in results],
        "n_tokens": [r.n_tokens for r in results],
        "n_ablations": [r.n_ablations for r in results],
        "ingested_at": [stamp] * len(results),
        "external_id": [r.external_id for r in results],
        "tags": [r.tags for r in results],
    }
    return pa.table(columns, schema=table("prompts").arrow_schema())


def _table_rows(run_id: int, name: str, results: list[PromptResult]) -> pa.Table:
    sizes = [len(next(iter(r.tables[name].values()))) for r in results]
    columns: dict[str, np.ndarray | list] = {}
    for col, dtype in PROMPT_TABLES[name].items():
        parts = [r.tables[name][col] for r in results]
        if dtype is object:
            columns[col] = [v for part in parts for v in part]
        else:
            columns[col] = np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)
    prompt_ids = np.repeat(np.array([r.prompt_id for r in results], np.int64), sizes)
    return arrow_table(name, columns, run_id=run_id, prompt_id=prompt_ids)


def prompt_tables(run_id: int, results: list[PromptResult]) -> dict[str, pa.Table]:
    """The rows ``results`` add to each per-prompt table and to ``prompts``, as Arrow tables.

    This is what :func:`write_prompt_results` inserts, and what a distributed ingest worker
    writes to a Parquet shard (ingest/shards.py) for the merger to insert the same way.
    """
    tables = {name: _table_rows(run_id, name, results) for name in PROMPT_TABLES}
    tables["prompts"] = _prompt_rows(run_id, results)
    return tables


def insert_prompt_tables(db: Database, run_id: int, tables: dict[str, pa.Table]) -> None:
    """Insert :func:`prompt_tables` output (one or several concatenated) and append its edges to
    the summary's delta (store/summary.py). Call it inside a transaction: the caller decides what
    lands together; call :func:`store.summary.maybe_fold` after the commit."""
    prompt_ids = tables["prompts"].column("prompt_id").to_pylist()
    if not prompt_ids:
        return
    for name in PROMPT_TABLES:
        db.insert_arrow(name, tables[name])
    append_delta(db, tables["edges"])
    # The prompts row goes last: its presence is what marks the prompt done.
    db.insert_arrow("prompts", tables["prompts"])


def write_prompt_results(db: Database, run_id: int, results: list[PromptResult]) -> None:
    """Write several prompts' results in one transaction (bulk, through Arrow), then fold the
    summary's delta if it has grown past its threshold (a transaction of its own)."""
    if not results:
        return
    with db.transaction():
        insert_prompt_tables(db, run_id, prompt_tables(run_id, results))
    maybe_fold(db)
