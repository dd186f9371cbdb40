"""Loading attention-output (hook_z) SAEs: gpt2-small-hook-z-kk-shaped files from an offline hub
cache, beside residual SAEs of gpt2-small-res-jb, through the same code users run against the hub.

The cache holds the tiny test model as ``gpt2``, tiny residual SAEs in the res-jb repo and tiny
hook_z SAEs in Kissane et al.'s repo, in its own format (``NAME.pt`` state dict and
``NAME_cfg.json`` with ``act_size``, ``dict_size``, ``act_name``, converted by sae_lens'
``connor_rob_hook_z`` loader). The same weights saved as local sae_lens folders must give the
same graph.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import db_rows
from hubcache import add_folder, add_repo
from typer.testing import CliRunner

from featuregraph.cli import app
from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import ModelSpec, RunConfig, SaeSpec
from featuregraph.ingest.loading import load_model
from featuregraph.ingest.run import ingest

RES_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
KK_REPO = "ckkissane/attn-saes-gpt2-small-all-layers"
KK_FILES = {  # sae_lens' pretrained_saes.yaml paths of blocks.0/1.hook_z
    0: "gpt2-small_L0_Hcat_z_lr1.20e-03_l11.80e+00_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v9",
    1: "gpt2-small_L1_Hcat_z_lr1.20e-03_l18.00e-01_ds24576_bs4096_dc1.00e-06_rsanthropic_rie25000_nr4_v5",
}
FLAGS = {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}


@pytest.fixture(scope="module")
def kk(tiny_assets, tmp_path_factory):
    """Tiny hook_z SAEs for the tiny model: KK-format files and the same as sae_lens folders."""
    root = tmp_path_factory.mktemp("kk")
    model, _ = load_model(ModelSpec(str(tiny_assets / "model")), FLAGS, "cpu", "float32")
    tokens = model.to_tokens(syn.TOKENIZER_TEXT)
    for layer, name in KK_FILES.items():
        hook = f"blocks.{layer}.attn.hook_z"
        x = syn.sample_residuals(model, hook, tokens[:, 1:])
        sae = syn.make_sae(hook, 32, 48, x, 0.15, seed=20 + layer, reshape_activations="hook_z")
        sae.save_model(root / f"local{layer}")
        torch.save({k: v.clone() for k, v in sae.state_dict().items()}, root / f"{name}.pt")
        (root / f"{name}_cfg.json").write_text(
            json.dumps({"act_size": 32, "dict_size": 48, "act_name": hook})
        )
    return root


def _hub_cache(tiny_assets, kk, cache):
    add_folder(cache, "gpt2", tiny_assets / "model")
    add_folder(cache, RES_REPO, tiny_assets / "sae0", "blocks.0.hook_resid_pre/")
    add_folder(cache, RES_REPO, tiny_assets / "sae1", "blocks.1.hook_resid_pre/")
    add_repo(cache, KK_REPO, {f.name: f for f in kk.iterdir() if f.is_file()})


# A residual and an attention SAE of one block share a layer: run_saes keyed by (run_id, layer,
# site_kind) comes with migration 0014 (h13n's branch); this branch alone cannot store the run.
_MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


@pytest.mark.skipif(
    not list(_MIGRATIONS.glob("0014_*.sql")), reason="needs migration 0014 (run_saes keyed by site)"
)
def _hub_ingest(tiny_assets, kk, tmp_path, db, sae_args: list[str]) -> None:
    cache = tmp_path / "hub"
    _hub_cache(tiny_assets, kk, cache)
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(cache),
        HF_HOME=str(tmp_path / "home"),
        OMP_NUM_THREADS="1",
    )
    hub = subprocess.run(
        [sys.executable, "-m", "featuregraph.cli", "ingest", str(tiny_assets / "prompts.txt"), "--db", str(db),
         "--model", "gpt2", *sae_args, "-q", "--device", "cpu"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert hub.returncode == 0, hub.stderr


def _local_ingest(tiny_assets, db, folders) -> None:
    config = RunConfig(
        model=ModelSpec(str(tiny_assets / "model")),
        saes=tuple(SaeSpec(path=str(p)) for p in folders),
        device="cpu",
    )
    ingest(db, tiny_assets / "prompts.txt", config, progress=False)


EDGES = "SELECT prompt_id, up_layer, up_feature, down_layer, down_feature, round(weight, 5) FROM edges ORDER BY ALL"


def test_hook_z_kk_release_loads_offline(tiny_assets, kk, tmp_path):
    hub_db, local_db = tmp_path / "hub.duckdb", tmp_path / "local.duckdb"
    _hub_ingest(tiny_assets, kk, tmp_path, hub_db,
                ["--sae-release", "gpt2-small-hook-z-kk", "--sae-layers", "0-1", "--sae-id-template", "blocks.{layer}.hook_z"])  # fmt: skip
    saes = db_rows(
        hub_db,
        "SELECT layer, site_kind, hook_name, sae_id, neuronpedia_id, d_in, d_sae FROM run_saes ORDER BY layer",
    )
    assert saes == [
        (0, "attn_z", "blocks.0.attn.hook_z", "blocks.0.hook_z", "gpt2-small/0-att-kk", 32, 48),
        (1, "attn_z", "blocks.1.attn.hook_z", "blocks.1.hook_z", "gpt2-small/1-att-kk", 32, 48),
    ]
    _local_ingest(tiny_assets, local_db, [kk / "local0", kk / "local1"])
    hub_edges = db_rows(hub_db, EDGES)
    assert hub_edges == db_rows(local_db, EDGES) != []
    assert {(uf >> 28, df >> 28) for _, _, uf, _, df, _ in hub_edges} == {(1, 1)}

    # Experiments on a mixed-site run are refused in one line, before the model loads.
    res = CliRunner().invoke(app, ["noise", str(local_db), "--corpus", str(tiny_assets / "prompts.txt")])
    assert res.exit_code == 2, res.output
    assert "experiments support residual SAE sites only; run 1 also has attn_z sites" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.skipif(
    not list(_MIGRATIONS.glob("0014_*.sql")), reason="needs migration 0014 (run_saes keyed by site)"
)
def test_hook_z_kk_release_loads_offline_beside_res_jb(tiny_assets, kk, tmp_path):
    hub_db, local_db = tmp_path / "hub.duckdb", tmp_path / "local.duckdb"
    _hub_ingest(tiny_assets, kk, tmp_path, hub_db,
                ["--sae-release", "gpt2-small-res-jb", "--sae-layers", "0-1", "--sae-release-id", "gpt2-small-hook-z-kk:blocks.0.hook_z",
                 "--sae-release-id", "gpt2-small-hook-z-kk:blocks.1.hook_z"])  # fmt: skip
    saes = db_rows(
        hub_db,
        "SELECT layer, site_kind, hook_name, release, sae_id, neuronpedia_id, d_in FROM run_saes ORDER BY layer, site_kind DESC",
    )
    assert saes == [
        (
            0,
            "resid",
            "blocks.0.hook_resid_pre",
            "gpt2-small-res-jb",
            "blocks.0.hook_resid_pre",
            "gpt2-small/0-res-jb",
            32,
        ),
        (
            0,
            "attn_z",
            "blocks.0.attn.hook_z",
            "gpt2-small-hook-z-kk",
            "blocks.0.hook_z",
            "gpt2-small/0-att-kk",
            32,
        ),
        (
            1,
            "resid",
            "blocks.1.hook_resid_pre",
            "gpt2-small-res-jb",
            "blocks.1.hook_resid_pre",
            "gpt2-small/1-res-jb",
            32,
        ),
        (
            1,
            "attn_z",
            "blocks.1.attn.hook_z",
            "gpt2-small-hook-z-kk",
            "blocks.1.hook_z",
            "gpt2-small/1-att-kk",
            32,
        ),
    ]
    # The same weights from local folders: the same graph, site-encoded feature ids included.
    _local_ingest(
        tiny_assets, local_db, [tiny_assets / "sae0", tiny_assets / "sae1", kk / "local0", kk / "local1"]
    )
    hub_edges = db_rows(hub_db, EDGES)
    assert hub_edges == db_rows(local_db, EDGES) != []
    # res 0 -> att 0 -> res 1 -> att 1: every kind of edge is there, att features stored as 2^28 + index.
    kinds = {(ul, uf >> 28, dl, df >> 28) for _, ul, uf, dl, df, _ in hub_edges}
    assert kinds == {(0, 0, 0, 1), (0, 0, 1, 0), (0, 1, 1, 0), (0, 1, 1, 1), (1, 0, 1, 1)}
    assert (
        db_rows(
            hub_db, "SELECT count(*) FROM activations WHERE feature >= 268435456 AND feature < 2 * 268435456"
        )[0][0]
        > 0
    )


def test_local_transcoder_and_mlp_out_folders_ingest(tiny_assets, tmp_path):
    """sae_lens folders of a transcoder (block 0) and an MLP-output SAE (block 1) ingest end to end:
    run_saes says what each is, every table stores their features site-encoded, and the stored
    transcoder activations are sae_lens' own encode of the MLP input."""
    model, _ = load_model(ModelSpec(str(tiny_assets / "model")), FLAGS, "cpu", "float32")
    tokens = model.to_tokens(syn.TOKENIZER_TEXT)
    x_in = syn.sample_residuals(model, "blocks.0.ln2.hook_normalized", tokens[:, 1:])
    tc = syn.make_transcoder(
        "blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", 32, 40, 32, x_in, 0.15, seed=3
    )
    tc.save_model(tmp_path / "tc0")
    x_out = syn.sample_residuals(model, "blocks.1.hook_mlp_out", tokens[:, 1:])
    syn.make_sae("blocks.1.hook_mlp_out", 32, 40, x_out, 0.15, seed=4).save_model(tmp_path / "mlp1")
    db = tmp_path / "fg.duckdb"
    _local_ingest(tiny_assets, db, [tmp_path / "mlp1", tmp_path / "tc0"])
    assert db_rows(db, "SELECT layer, site_kind, hook_name, architecture FROM run_saes ORDER BY layer") == [
        (0, "transcoder", "blocks.0.ln2.hook_normalized", "transcoder"),
        (1, "mlp_out", "blocks.1.hook_mlp_out", "standard"),
    ]
    codes = "SELECT DISTINCT layer, feature >> 28 FROM {} ORDER BY ALL"
    for table in ("activations", "ablations", "logit_effects"):
        assert db_rows(db, codes.format(table)) == [(0, 3), (1, 2)], table
    assert db_rows(
        db, "SELECT DISTINCT up_layer, up_feature >> 28, down_layer, down_feature >> 28 FROM edges"
    ) == [(0, 3, 1, 2)]
    text = db_rows(db, "SELECT text FROM prompts WHERE prompt_id = 0")[0][0]
    toks = model.to_tokens(text)
    _, cache = model.run_with_cache(toks, names_filter=["blocks.0.ln2.hook_normalized"])
    dense = tc.encode(cache["blocks.0.ln2.hook_normalized"][0])
    stored = db_rows(
        db,
        "SELECT position, feature - 3 * 268435456, activation FROM activations WHERE prompt_id = 0 AND layer = 0",
    )
    expected = [(int(p), int(f), float(dense[p, f])) for p, f in dense.nonzero()]
    assert sorted((p, f) for p, f, _ in stored) == sorted((p, f) for p, f, _ in expected) != []
    got = {(p, f): a for p, f, a in stored}
    assert all(abs(got[(p, f)] - a) < 1e-5 for p, f, a in expected)
