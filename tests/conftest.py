"""Shared fixtures: tiny random models and SAEs built locally (no hub), seeded."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
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


# Tiny tensors: extra threads only add synchronisation cost (and flakiness under load).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


def build_sites(model, hooks: list[str], d_sae: int, density: float, tokens: torch.Tensor) -> list[SaeSite]:
    """Random SAEs calibrated on ``tokens`` (BOS column excluded), as SaeSites."""
    sites = []
    for i, hook in enumerate(hooks):
        x = syn.sample_residuals(model, hook, tokens)[tokens.shape[0] :]
        sae = syn.make_sae(hook, model.cfg.d_model, d_sae, x, density, seed=100 + i)
        sites.append(SaeSite(residual_layer(hook), hook, sae, {}))
    return sites


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory) -> Path:
    """A Hugging Face model folder (2 layers, d_model 32) and three sae_lens SAE folders."""
    from featuregraph.ingest.loading import load_model

    root = tmp_path_factory.mktemp("assets")
    syn.save_hf_model(root / "model", n_layers=2, d_model=32, n_ctx=32, seed=0)
    model, _ = load_model(
        ModelSpec(str(root / "model")),
        {"fold_ln": True, "center_writing_weights": True, "center_unembed": True},
        "cpu",
        "float32",
    )
    tokens = model.to_tokens(syn.TOKENIZER_TEXT)
    for i, hook in enumerate(HOOKS):
        x = syn.sample_residuals(model, hook, tokens[:, 1:])
        syn.make_sae(hook, 32, 64, x, 0.1, seed=i, model_name="tiny").save_model(root / f"sae{i}")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return root


def tiny_config(assets: Path, n_saes: int = len(HOOKS), **sweep) -> RunConfig:
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
        return {t: con.execute(f"SELECT {cols} FROM {t} ORDER BY ALL").fetchall() for t, cols in columns.items()}
    finally:
        con.close()
