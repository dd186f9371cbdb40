"""The hub loading paths (model by name, SAEs by sae_lens release) run offline on a fake cache.

The cache holds the tiny test model under the repo id ``gpt2`` and tiny SAEs under the
repo of the ``gpt2-small-res-jb`` release, so the same code users run against the hub is
exercised; results must equal those of loading the same files from local folders.
"""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import db_rows, tiny_config
from hubcache import add_folder

from featuregraph.ingest.run import ingest

RELEASE_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"


def test_hub_names_load_from_an_offline_cache(tiny_assets, tmp_path):
    cache = tmp_path / "hub"
    add_folder(cache, "gpt2", tiny_assets / "model")
    add_folder(cache, RELEASE_REPO, tiny_assets / "sae0", "blocks.0.hook_resid_pre/")
    add_folder(cache, RELEASE_REPO, tiny_assets / "sae1", "blocks.1.hook_resid_pre/")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    hub_db, local_db = tmp_path / "hub.duckdb", tmp_path / "local.duckdb"
    common = ["-q", "--device", "cpu"]
    hub = subprocess.run(
        [sys.executable, "-m", "featuregraph.cli", "ingest", str(tiny_assets / "prompts.txt"), "--db", str(hub_db),
         "--model", "gpt2", "--sae-release", "gpt2-small-res-jb", "--sae-layers", "0-1", *common],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert hub.returncode == 0, hub.stderr
    ingest(local_db, tiny_assets / "prompts.txt", tiny_config(tiny_assets, n_saes=2), progress=False)

    assert db_rows(hub_db, "SELECT model, model_source FROM runs") == [("gpt2", "hub")]
    saes = db_rows(hub_db, "SELECT layer, release, sae_id, path, neuronpedia_id FROM run_saes ORDER BY layer")
    assert saes == [
        (0, "gpt2-small-res-jb", "blocks.0.hook_resid_pre", None, "gpt2-small/0-res-jb"),
        (1, "gpt2-small-res-jb", "blocks.1.hook_resid_pre", None, "gpt2-small/1-res-jb"),
    ]
    # The release asks for center_writing_weights; it is honoured and recorded.
    assert db_rows(hub_db, "SELECT model_config->>'center_writing_weights' FROM runs") == [("true",)]
    # Same weights, same SAEs: same graph.
    edges = "SELECT prompt_id, up_layer, up_feature, down_feature, round(weight, 5) FROM edges ORDER BY ALL"
    assert db_rows(hub_db, edges) == db_rows(local_db, edges) != []
    sha = "SELECT layer, sha256 FROM run_saes ORDER BY layer"
    assert db_rows(hub_db, sha) == db_rows(local_db, sha)


def test_missing_hub_files_give_one_line(tiny_assets, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty"), HF_HOME=str(tmp_path / "home"))
    db = tmp_path / "fg.duckdb"
    res = subprocess.run(
        [sys.executable, "-m", "featuregraph.cli", "ingest", str(tiny_assets / "prompts.txt"), "--db", str(db),
         "--model", "gpt2", "--sae-release", "gpt2-small-res-jb", "--sae-id", "blocks.0.hook_resid_pre", "-q"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip().startswith("Error: could not load SAE gpt2-small-res-jb/blocks.0.hook_resid_pre")
    assert len(res.stderr.strip().splitlines()) == 1
    assert not db.exists()
