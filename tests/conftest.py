"""Shared fixtures: tiny random models and SAEs built locally (no hub), seeded.

Plain helpers (run rows, configs, table dumps) are in ``helpers.py``; tests import that, never this file.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import HOOKS, PROMPTS

from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import ModelSpec

# Tiny tensors: extra threads only add synchronisation cost (and flakiness under load).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


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
