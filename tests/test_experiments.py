"""Noise baselines, path validation and response curves on a model whose answer is known."""

from __future__ import annotations

import json

import duckdb
import planted
import pytest

from featuregraph.ingest.config import ModelSpec, RunConfig, SaeSpec, SweepConfig
from featuregraph.ingest.experiments import run_curve, run_noise, run_validation
from featuregraph.ingest.noise import NoiseSpec
from featuregraph.ingest.run import ingest
from featuregraph.ingest.validation import ValidationSpec

UP_NODE, DOWN_NODE = f"0.{planted.UP}", f"1.{planted.DOWN}"


@pytest.fixture(scope="module")
def planted_db(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    paths = planted.build(root)
    # Task prompts end with the trigger; "like-noise" prompts come from the corpus's own distribution.
    rows = [{"text": t, "tag": "task"} for t in planted.sentences(12, 6, seed=1, end_with_trigger=True)]
    rows += [{"text": t, "tag": "like-noise"} for t in planted.sentences(12, 8, seed=4, end_with_trigger=False)]
    (root / "prompts.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "corpus.txt").write_text("\n".join(planted.sentences(60, 8, seed=2, end_with_trigger=False)) + "\n")
    new = [{"text": t, "answer": planted.WORDS[planted.OUT]} for t in planted.sentences(10, 5, seed=3, end_with_trigger=True)]
    (root / "new.jsonl").write_text("\n".join(json.dumps(x) for x in new) + "\n")
    config = RunConfig(
        model=ModelSpec(str(paths["model"])),
        saes=tuple(SaeSpec(path=str(p)) for p in paths["saes"]),
        sweep=SweepConfig(edge_top_k=8, edge_floor=1e-4),
        device="cpu",
    )
    db = root / "fg.duckdb"
    ingest(db, root / "prompts.jsonl", config, progress=False)
    return root, db


def test_planted_edge_and_logit_stand_out_from_noise(planted_db):
    root, db = planted_db
    experiment_id, summary = run_noise(db, NoiseSpec(str(root / "corpus.txt"), n_contexts=50, context_tokens=8), progress=False)
    assert summary["contexts"] == 50
    con = duckdb.connect(str(db), read_only=True)
    nf = con.execute(
        "SELECT n_contexts, n_active FROM noise_features WHERE experiment_id = ? AND layer = 0 AND feature = ?",
        [experiment_id, planted.UP],
    ).fetchone()
    assert nf == (50, 0)  # the trigger never occurs in the corpus
    planted_z = con.execute(
        "SELECT min(abs(z_score)), count(*) FROM edge_snr WHERE up_layer = 0 AND up_feature = ? AND down_feature = ?",
        [planted.UP, planted.DOWN],
    ).fetchone()
    assert planted_z[1] == 12 and planted_z[0] > 100  # in every prompt
    like_noise = [
        r[0]
        for r in con.execute(
            "SELECT abs(z_score) FROM edge_snr JOIN prompts USING (run_id, prompt_id) "
            "WHERE tag = 'like-noise' AND z_score IS NOT NULL"
        ).fetchall()
    ]
    assert len(like_noise) > 20
    median = sorted(like_noise)[len(like_noise) // 2]
    # Edges of contexts like the corpus look like its noise (zeros count: a pair that is rarely
    # nonzero elsewhere scores a few sigma), far from the planted, context-specific edge.
    assert median < 5.0 and planted_z[0] > 20 * median
    z_logit = con.execute(
        "SELECT max(z_score), avg(dprob) FROM logit_snr WHERE layer = 0 AND feature = ? AND token_id = ?",
        [planted.UP, planted.OUT],
    ).fetchone()
    assert z_logit[0] < -100 and z_logit[1] < -0.004  # ablating 0.3 suppresses OUT, far beyond noise
    kinds = con.execute("SELECT kind, status, spec->>'n_contexts' FROM experiments").fetchall()
    assert ("noise", "complete", "50") in kinds
    con.close()


@pytest.mark.parametrize("control", ["zero", "random"])
def test_path_ablation_beats_its_control(planted_db, control):
    root, db = planted_db
    spec = ValidationSpec((UP_NODE, DOWN_NODE), str(root / "new.jsonl"), control=control)
    experiment_id, s = run_validation(db, spec)
    assert s["prompts"] == 10
    assert s["path_beats_control"] >= 0.9
    assert s["mean_total_variation_path"] > 3 * s["mean_total_variation_control"]
    assert s["mean_answer_dprob_path"] < -0.05
    assert abs(s["mean_answer_dprob_control"]) < abs(s["mean_answer_dprob_path"]) / 3
    con = duckdb.connect(str(db), read_only=True)
    arms = con.execute(
        "SELECT arm, count(*), min(features), max(features) FROM validation_results WHERE experiment_id = ? GROUP BY arm ORDER BY arm",
        [experiment_id],
    ).fetchall()
    assert arms[1] == ("path", 10, f"{UP_NODE},{DOWN_NODE}", f"{UP_NODE},{DOWN_NODE}")
    assert arms[0][1] == 10 and UP_NODE not in arms[0][2]
    if control == "zero":
        assert arms[0][2] == arms[0][3] == "0.0,1.0"
    suppressed = con.execute(
        "SELECT token_id FROM validation_tokens WHERE experiment_id = ? AND arm = 'path' AND kind = 'suppressed' AND rank = 1",
        [experiment_id],
    ).fetchall()
    assert all(t[0] == planted.OUT for t in suppressed)
    con.close()


def test_response_curve_of_a_linear_path_is_linear(planted_db):
    root, db = planted_db
    prompt = planted.sentences(1, 4, seed=9, end_with_trigger=True)[0]
    coefs = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    experiment_id, s = run_curve(db, UP_NODE, DOWN_NODE, prompt, coefs, tokens=[planted.WORDS[planted.OUT]])
    assert s["r2"] > 0.99999 and s["slope"] > 0.5
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute(
        "SELECT coefficient, down_activation, prob FROM curve_points WHERE experiment_id = ? ORDER BY coefficient",
        [experiment_id],
    ).fetchall()
    assert [r[0] for r in rows] == coefs
    clean = con.execute("SELECT max(weight) FROM edges WHERE up_feature = ? AND down_feature = ?", [planted.UP, planted.DOWN]).fetchone()
    assert clean[0] is None or clean[0] < 0  # zero-ablation lowers 1.5
    probs = [r[2] for r in rows]
    assert probs == sorted(probs)  # more of 0.3 -> more OUT
    con.close()


def test_experiment_errors_are_one_line(planted_db, tmp_path):
    from featuregraph.errors import InputError

    root, db = planted_db
    with pytest.raises(InputError, match="no SAE at layer 5"):
        run_curve(db, "5.1", None, "w1 w7", [0.0, 1.0])
    with pytest.raises(InputError, match="not active in the prompt"):
        run_curve(db, UP_NODE, None, "w1 w2", [0.0, 1.0])
    with pytest.raises(InputError, match="no run 99"):
        run_validation(db, ValidationSpec((UP_NODE,), str(root / "new.jsonl")), run_id=99)
