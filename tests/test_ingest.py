"""Ingest end to end: database round trip, provenance, idempotence, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
from helpers import PROMPTS, table_rows, tiny_config

from featuregraph.ingest.loading import load_all
from featuregraph.ingest.prompts import read_prompts, tokenize_prompts
from featuregraph.ingest.run import ingest
from featuregraph.ingest.sweep import Sweeper

CONTENT_TABLES = {
    "tokens": "prompt_id, position, token_id, token",
    "top_next_tokens": "prompt_id, rank, token_id, prob, logp",
    "activations": "prompt_id, layer, position, feature, activation",
    "ablations": "prompt_id, layer, feature, n_positions, max_activation, read_activation",
    "edges": "prompt_id, up_layer, up_feature, down_layer, down_feature, weight",
    "logit_effects": "prompt_id, layer, feature, token_id, dlogp, dprob",
    "prompts": "prompt_id, text, text_sha256, tag, metadata, n_tokens, n_ablations",
}


def _content(path: Path) -> dict[str, list[tuple]]:
    return table_rows(path, CONTENT_TABLES)


def test_round_trip_matches_the_sweep_and_records_provenance(tiny_assets, tmp_path):
    config = tiny_config(tiny_assets)
    db_path = tmp_path / "fg.duckdb"
    summary = ingest(db_path, tiny_assets / "prompts.txt", config, progress=False)
    assert (summary.n_prompts, summary.n_swept, summary.resumed) == (len(PROMPTS), len(PROMPTS), False)

    loaded = load_all(config.model, config.saes, "cpu", "float32", None)
    inputs = tokenize_prompts(loaded.model, read_prompts(tiny_assets / "prompts.txt"), loaded.prepend_bos, "p")
    sweeper = Sweeper(loaded.model, loaded.sites, config.sweep, loaded.prepend_bos)
    con = duckdb.connect(str(db_path), read_only=True)
    for p in inputs:
        expected = sweeper.sweep(p).tables["edges"]
        rows = con.execute(
            "SELECT up_layer, up_feature, down_layer, down_feature, weight FROM edges "
            "WHERE prompt_id = ? ORDER BY up_layer, up_feature, down_feature",
            [p.prompt_id],
        ).fetchall()
        keys = zip(*(expected[c].tolist() for c in ("up_layer", "up_feature", "down_layer", "down_feature")), strict=False)
        want = dict(zip(keys, expected["weight"].tolist(), strict=False))
        got = {tuple(r[:4]): r[4] for r in rows}
        assert len(rows) == len(got) > 0, "no edge twice"
        for key in got.keys() | want.keys():
            if key in got and key in want:
                assert abs(got[key] - want[key]) <= 1e-5, key
            else:  # batching changes rounding (~1e-6), which may move an edge across the floor, nothing more
                assert abs(abs(got.get(key, want.get(key))) - config.sweep.edge_floor) <= 1e-5, key
        toks = con.execute("SELECT token_id FROM tokens WHERE prompt_id = ? ORDER BY position", [p.prompt_id]).fetchall()
        assert [t[0] for t in toks] == p.token_ids

    run = con.execute(
        "SELECT status, model_source, model_sha256, n_prompts, coefficient, edge_top_k, edge_floor, logit_top_k, "
        "prepend_bos, device, dtype, config, sae_lens_version, torch_version, finished_at IS NOT NULL FROM runs"
    ).fetchall()
    assert len(run) == 1
    status, source, sha, n, coef, k, floor, lk, bos, device, dtype, cfg, sl, tv, finished = run[0]
    assert (status, source, n, coef, k, floor, lk, bos, device, dtype, finished) == (
        "complete", "path", len(PROMPTS), 0.0, 32, 1e-4, 10, True, "cpu", "float32", True
    )
    assert len(sha) == 64 and sl and tv
    assert json.loads(cfg)["sweep"]["edge_top_k"] == 32
    saes = con.execute("SELECT layer, hook_name, path, d_sae, length(sha256) FROM run_saes ORDER BY layer").fetchall()
    assert [s[:2] for s in saes] == [(0, "blocks.0.hook_resid_pre"), (1, "blocks.1.hook_resid_pre"), (2, "blocks.1.hook_resid_post")]
    assert all(s[2].endswith(f"sae{i}") and s[3] == 64 and s[4] == 64 for i, s in enumerate(saes))
    vocab = con.execute("SELECT count(*) FROM vocab").fetchone()[0]
    assert vocab == loaded.model.cfg.d_vocab
    con.close()


def test_rerunning_the_same_command_adds_nothing(tiny_assets, tmp_path):
    config = tiny_config(tiny_assets)
    db_path = tmp_path / "fg.duckdb"
    ingest(db_path, tiny_assets / "prompts.txt", config, progress=False)
    before = _content(db_path)
    again = ingest(db_path, tiny_assets / "prompts.txt", config, progress=False)
    assert again.resumed and again.n_swept == 0
    assert _content(db_path) == before
    # A different setting is a different run, in the same file.
    other = ingest(db_path, tiny_assets / "prompts.txt", tiny_config(tiny_assets, coefficient=0.5), progress=False)
    assert other.run_id != again.run_id and not other.resumed


def _cli(assets: Path, prompts: Path, db: Path) -> list[str]:
    args = [sys.executable, "-m", "featuregraph.cli", "ingest", str(prompts), "--db", str(db),
            "--model", str(assets / "model"), "--device", "cpu", "--commit-every", "2", "-v", "-q"]  # fmt: skip
    for i in range(3):
        args += ["--sae", str(assets / f"sae{i}")]
    return args


def test_resume_after_kill_9_gives_the_uninterrupted_result(tiny_assets, tmp_path):
    prompts = tmp_path / "many.txt"
    short = ["The quick brown fox", "Copyright (C", "A"]
    prompts.write_text("\n".join(f"{short[i % 3]} {i}" for i in range(40)) + "\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")

    clean_db = tmp_path / "clean.duckdb"
    ingest(clean_db, prompts, tiny_config(tiny_assets), progress=False)

    killed_db = tmp_path / "killed.duckdb"
    proc = subprocess.Popen(_cli(tiny_assets, prompts, killed_db), env=env, stderr=subprocess.PIPE, text=True)
    commits = 0
    for line in proc.stderr:
        if "committed prompts" in line:
            commits += 1
            if commits == 3:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = _content(killed_db)["prompts"]
    assert 6 <= len(partial) < 40, "the kill must land mid-run"

    done = subprocess.run(_cli(tiny_assets, prompts, killed_db), check=True, env=env, capture_output=True, text=True)
    assert "resumed" in done.stdout
    assert _content(killed_db) == _content(clean_db)
    con = duckdb.connect(str(killed_db), read_only=True)
    assert con.execute("SELECT count(*), min(status) FROM runs").fetchone() == (1, "complete")
    con.close()


def test_prompt_tags_and_metadata_land(tiny_assets, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        '{"text": "Copyright (C", "tag": "paren", "source": "seed"}\n\n{"text": "The quick brown fox"}\n'
    )
    db_path = tmp_path / "fg.duckdb"
    ingest(db_path, prompts, tiny_config(tiny_assets), progress=False)
    con = duckdb.connect(str(db_path), read_only=True)
    rows = con.execute("SELECT prompt_id, tag, metadata FROM prompts ORDER BY prompt_id").fetchall()
    assert rows[0][:2] == (0, "paren") and json.loads(rows[0][2]) == {"source": "seed"}
    assert rows[1] == (1, None, None)
    con.close()


def test_coefficient_one_changes_nothing_and_two_differs_from_zero(tiny_assets, tmp_path):
    db_path = tmp_path / "fg.duckdb"
    for c in (0.0, 1.0, 2.0):
        ingest(db_path, tiny_assets / "prompts.txt", tiny_config(tiny_assets, coefficient=c), progress=False)
    con = duckdb.connect(str(db_path), read_only=True)
    by_run = dict(con.execute("SELECT coefficient, run_id FROM runs").fetchall())
    assert set(by_run) == {0.0, 1.0, 2.0}
    n_edges = dict(con.execute("SELECT run_id, count(*) FROM edges GROUP BY run_id").fetchall())
    assert n_edges.get(by_run[1.0], 0) == 0  # c = 1 leaves the feature as it is: no effect above the floor
    assert con.execute("SELECT max(abs(dprob)) FROM logit_effects WHERE run_id = ?", [by_run[1.0]]).fetchone()[0] < 1e-6
    # Removing a feature and doubling it push the first logit effect in opposite directions.
    opposite = con.execute(
        "SELECT avg(CASE WHEN sign(a.dlogp) = -sign(b.dlogp) THEN 1.0 ELSE 0.0 END) FROM logit_effects a "
        "JOIN logit_effects b USING (prompt_id, layer, feature, token_id) WHERE a.run_id = ? AND b.run_id = ?",
        [by_run[0.0], by_run[2.0]],
    ).fetchone()[0]
    assert opposite > 0.8
    con.close()
