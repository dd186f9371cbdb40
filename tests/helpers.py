"""Plain helpers shared by the tests (import them: ``from helpers import tiny_config``).

Fixtures live in ``conftest.py``; everything here is an ordinary function or constant, so a
test module imports it like any other module and never imports ``conftest``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import ModelSpec, RunConfig, SaeSpec, SweepConfig
from featuregraph.ingest.loading import SaeSite, residual_layer

HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
PROMPTS = [
    "The quick brown fox",
    "Copyright (C",
    "When Mary and John went to the store, John gave a drink to",
    "A",
]

# A complete run row as ``store.runs.create_run`` takes it: a hand-built model, nothing loaded.
_RUN_DEFAULTS: dict[str, Any] = {
    "model": "hand-built", "model_source": "path", "model_sha256": None, "model_config": {"n_layers": 3},
    "prompts_source": "tests", "n_prompts": 0, "prepend_bos": True, "device": "cpu",
    "featuregraph_version": "test", "torch_version": "-", "sae_lens_version": "-", "transformer_lens_version": "-",
}  # fmt: skip
# Run settings live in runs.config (the flat columns are generated from it): overrides naming
# one of these go there.
_SWEEP_DEFAULTS: dict[str, Any] = {
    "coefficient": 0.0, "edge_top_k": 32, "edge_floor": 0.0, "logit_top_k": 2, "top_next_k": 1, "read_position": -1,
}  # fmt: skip
_JSON_COLUMNS = ("model_config", "config")


def make_run(**overrides: Any) -> dict[str, Any]:
    """A run row for ``store.runs.create_run``: the defaults above with ``overrides`` applied;
    sweep settings and ``dtype`` are folded into ``config`` as the store keeps them.

    An override naming no column or setting of a run is a typo in the test, so it raises.
    """
    known = set(_RUN_DEFAULTS) | set(_SWEEP_DEFAULTS) | {"dtype", "config"}
    unknown = set(overrides) - known
    if unknown:
        raise KeyError(f"not a run column: {sorted(unknown)}")
    sweep = {k: overrides.pop(k, v) for k, v in _SWEEP_DEFAULTS.items()}
    config = {"sweep": sweep, "dtype": overrides.pop("dtype", "float32"), **overrides.pop("config", {})}
    return {**_RUN_DEFAULTS, **overrides, "config": config}


def insert_run(con: Any, run_key: str, status: str = "running", **overrides: Any) -> None:
    """Insert a run row with plain SQL through ``con.execute`` (a DuckDB connection or a
    ``Database``), for tests that need a row without the store's writer (an old schema, a
    driver-side run). Values are :func:`make_run`'s; ``started_at`` is now."""
    from featuregraph.store.run_config import CONFIG_VERSION

    row = make_run(**overrides)
    row = {k: json.dumps(v, sort_keys=True) if k in _JSON_COLUMNS else v for k, v in row.items()}
    row.update(run_key=run_key, status=status, config_version=CONFIG_VERSION)
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"INSERT INTO runs ({columns}, started_at) VALUES ({marks}, now())", list(row.values()))


def insert_old_run(con: Any, run_key: str, status: str = "running", **overrides: Any) -> None:
    """Like :func:`insert_run`, into a database still at schema 1-6, where the run's settings
    were flat columns (and ``config`` an unversioned copy, here empty)."""
    row = make_run(**overrides)
    config = row.pop("config")
    row.update(config["sweep"], dtype=config["dtype"], config={})
    row = {k: json.dumps(v, sort_keys=True) if k in _JSON_COLUMNS else v for k, v in row.items()}
    row.update(run_key=run_key, status=status)
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"INSERT INTO runs ({columns}, started_at) VALUES ({marks}, now())", list(row.values()))


def build_sites(model, hooks: list[str], d_sae: int, density: float, tokens: torch.Tensor) -> list[SaeSite]:
    """Random SAEs calibrated on ``tokens`` (BOS column excluded), as SaeSites."""
    sites = []
    for i, hook in enumerate(hooks):
        x = syn.sample_residuals(model, hook, tokens)[tokens.shape[0] :]
        sae = syn.make_sae(hook, model.cfg.d_model, d_sae, x, density, seed=100 + i)
        sites.append(SaeSite(residual_layer(hook), hook, sae, {}))
    return sites


def tiny_config(assets: Path, n_saes: int = len(HOOKS), **sweep) -> RunConfig:
    """The run configuration of the ``tiny_assets`` fixture's model and first ``n_saes`` SAEs."""
    return RunConfig(
        model=ModelSpec(str(assets / "model")),
        saes=tuple(SaeSpec(path=str(assets / f"sae{i}")) for i in range(n_saes)),
        sweep=SweepConfig(**sweep),
        device="cpu",
    )


def table_rows(path: Path, columns: dict[str, str]) -> dict[str, list[tuple]]:
    """``{table: rows}`` of a database, the given columns of each table in a canonical order."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return {
            t: con.execute(f"SELECT {cols} FROM {t} ORDER BY ALL").fetchall() for t, cols in columns.items()
        }
    finally:
        con.close()


def all_rows(con: Any) -> dict[str, list[tuple]]:
    """Every table's rows but ``schema_migrations``'s, sorted (``con``: a DuckDB connection or a
    ``Database``): what a migration must leave as it was."""
    tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
    return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables if t != "schema_migrations"}


def db_rows(path: Path, sql: str) -> list[tuple]:
    """The rows of one query on a database file, opened read-only."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def summary_before_0017(sql: str) -> str:
    """store.summary's BUILD_SUMMARY as a database before migration 0017 can run it (sorted by
    edge: fg_zorder does not exist yet)."""
    return sql.replace("fg_zorder(up_feature, down_feature)", "up_feature, down_feature")


def graph_database_before(path: Path, version: int, graph: dict) -> Any:
    """database_before(path, version) holding ``graph`` (prompt -> (tag, edges)) as run 1, its
    summary derived by the store's own statements as that version ran them."""
    from featuregraph.store.summary import BUILD_OCCURRENCES, BUILD_SUMMARY

    con = database_before(path, version)
    insert_run(con, "old", "complete")
    for p, (tag, edges) in graph.items():
        con.execute("INSERT INTO prompts (run_id, prompt_id, text, text_sha256, tag, n_tokens, n_ablations, "
                    "ingested_at) VALUES (1, ?, 'p', 'h', ?, 2, 1, now())", [p, tag])  # fmt: skip
        con.executemany("INSERT INTO edges VALUES (1, ?, ?, ?, ?, ?, ?)", [[p, *e] for e in edges])
    con.execute(summary_before_0017(BUILD_SUMMARY), {"run_id": None})
    con.execute(BUILD_OCCURRENCES, {"run_id": None})
    return con


def database_before(path: Path, version: int) -> Any:
    """A DuckDB connection to a new database at ``path`` built by every migration below ``version``
    and recorded as applied: an "old" database for upgrade tests."""
    import duckdb

    from featuregraph.store.migrate import available_migrations

    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")  # fmt: skip
    for mig in available_migrations():
        if mig.version < version:
            con.execute(mig.sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [mig.version, mig.name])
    return con

