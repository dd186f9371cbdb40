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
from featuregraph.store.summary import update_summary

FIND_RUN = "SELECT run_id, status FROM runs WHERE run_key = ?"
INSERT_RUN = """
INSERT INTO runs (
    run_key, status, model, model_source, model_sha256, model_config, prompts_source, n_prompts,
    coefficient, edge_top_k, edge_floor, logit_top_k, top_next_k, prepend_bos, read_position,
    device, dtype, config, featuregraph_version, torch_version, sae_lens_version,
    transformer_lens_version, started_at
) VALUES (
    $run_key, 'running', $model, $model_source, $model_sha256, $model_config, $prompts_source,
    $n_prompts, $coefficient, $edge_top_k, $edge_floor, $logit_top_k, $top_next_k, $prepend_bos,
    $read_position, $device, $dtype, $config, $featuregraph_version, $torch_version,
    $sae_lens_version, $transformer_lens_version, $started_at
) RETURNING run_id
"""
INSERT_RUN_SAE = """
INSERT INTO run_saes (run_id, layer, site_kind, hook_name, d_in, d_sae, architecture, release,
                      sae_id, path, sha256, neuronpedia_id, config)
VALUES ($run_id, $layer, $site_kind, $hook_name, $d_in, $d_sae, $architecture, $release,
        $sae_id, $path, $sha256, $neuronpedia_id, $config)
"""
RESUME_RUN = "UPDATE runs SET status = 'running', device = ?, finished_at = NULL WHERE run_id = ?"
FINISH_RUN = "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?"
DONE_PROMPTS = "SELECT prompt_id FROM prompts WHERE run_id = ?"
HAS_VOCAB = "SELECT count(*) FROM vocab WHERE run_id = ?"

RUN_FIELDS = (
    "model", "model_source", "model_sha256", "model_config", "prompts_source", "n_prompts",
    "coefficient", "edge_top_k", "edge_floor", "logit_top_k", "top_next_k", "prepend_bos",
    "read_position", "device", "dtype", "config", "featuregraph_version", "torch_version",
    "sae_lens_version", "transformer_lens_version",
)  # fmt: skip


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
    """Insert a run, its SAEs and its vocabulary in one transaction; return the run_id."""
    missing = set(RUN_FIELDS) - set(run)
    if missing:
        raise ValueError(f"run row lacks {sorted(missing)}")
    params = {k: run[k] for k in RUN_FIELDS}
    for key in ("model_config", "config"):
        params[key] = json.dumps(params[key], sort_keys=True)
    params["run_key"] = run_key
    params["started_at"] = now()
    with db.transaction():
        run_id = int(db.fetchone(INSERT_RUN, params)[0])
        for sae in saes:
            row = dict(sae, run_id=run_id, config=json.dumps(sae["config"], sort_keys=True))
            db.execute(INSERT_RUN_SAE, row)
        db.insert_arrow(
            "vocab",
            pa.table(
                {
                    "run_id": pa.array(np.full(len(vocab), run_id, np.int32)),
                    "token_id": pa.array(np.arange(len(vocab), dtype=np.int32)),
                    "token": pa.array(vocab, pa.string()),
                }
            ),
        )
    return run_id


def resume_run(db: Database, run_id: int, device: str) -> None:
    db.execute(RESUME_RUN, [device, run_id])


def finish_run(db: Database, run_id: int, status: str) -> None:
    """Close a run as ``complete`` or ``failed``."""
    db.execute(FINISH_RUN, [status, now(), run_id])


def done_prompt_ids(db: Database, run_id: int) -> set[int]:
    """Prompts of the run whose results have landed."""
    return {int(r[0]) for r in db.fetchall(DONE_PROMPTS, [run_id])}


def _column(values: np.ndarray | list, dtype: type) -> pa.Array:
    if dtype is object:
        return pa.array(list(values), pa.string())
    return pa.array(np.asarray(values, dtype=dtype))


def _prompt_rows(run_id: int, results: Iterable[PromptResult]) -> pa.Table:
    results = list(results)
    stamp = now()
    return pa.table(
        {
            "run_id": pa.array(np.full(len(results), run_id, np.int32)),
            "prompt_id": pa.array([r.prompt_id for r in results], pa.int32()),
            "text": pa.array([r.text for r in results], pa.string()),
            "text_sha256": pa.array([text_sha256(r.text) for r in results], pa.string()),
            "tag": pa.array([r.tag for r in results], pa.string()),
            "metadata": pa.array(
                [json.dumps(r.metadata) if r.metadata is not None else None for r in results],
                pa.string(),
            ),
            "n_tokens": pa.array([r.n_tokens for r in results], pa.int16()),
            "n_ablations": pa.array([r.n_ablations for r in results], pa.int32()),
            "ingested_at": pa.array([stamp] * len(results), pa.timestamp("us")),
            "external_id": pa.array([r.external_id for r in results], pa.string()),
            "tags": pa.array([r.tags for r in results], pa.list_(pa.string())),
        }
    )


def _table_rows(run_id: int, name: str, results: list[PromptResult]) -> pa.Table:
    spec = PROMPT_TABLES[name]
    sizes = [len(next(iter(r.tables[name].values()))) for r in results]
    total = sum(sizes)
    columns: dict[str, pa.Array] = {
        "run_id": pa.array(np.full(total, run_id, np.int32)),
        "prompt_id": pa.array(
            np.repeat(np.array([r.prompt_id for r in results], np.int32), sizes)
        ),
    }
    for col, dtype in spec.items():
        parts = [r.tables[name][col] for r in results]
        if dtype is object:
            columns[col] = pa.array([v for part in parts for v in part], pa.string())
        else:
            joined = np.concatenate(parts) if parts else np.empty(0, dtype)
            columns[col] = _column(joined, dtype)
    return pa.table(columns)


def prompt_tables(run_id: int, results: list[PromptResult]) -> dict[str, pa.Table]:
    """The rows ``results`` add to each per-prompt table and to ``prompts``, as Arrow tables.

    This is what :func:`write_prompt_results` inserts, and what a distributed ingest worker
    writes to a Parquet shard (ingest/shards.py) for the merger to insert the same way.
    """
    tables = {name: _table_rows(run_id, name, results) for name in PROMPT_TABLES}
    tables["prompts"] = _prompt_rows(run_id, results)
    return tables


def insert_prompt_tables(db: Database, run_id: int, tables: dict[str, pa.Table]) -> None:
    """Insert :func:`prompt_tables` output (one or several concatenated) and fold it into the
    summary tables. Call it inside a transaction: the caller decides what lands together."""
    prompt_ids = tables["prompts"].column("prompt_id").to_pylist()
    if not prompt_ids:
        return
    for name in PROMPT_TABLES:
        db.insert_arrow(name, tables[name])
    update_summary(db, run_id, prompt_ids)
    # The prompts row goes last: its presence is what marks the prompt done.
    db.insert_arrow("prompts", tables["prompts"])


def write_prompt_results(db: Database, run_id: int, results: list[PromptResult]) -> None:
    """Write several prompts' results in one transaction (bulk, through Arrow)."""
    if not results:
        return
    with db.transaction():
        insert_prompt_tables(db, run_id, prompt_tables(run_id, results))
