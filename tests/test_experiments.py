"""Noise baselines, path validation and response curves on a model whose answer is known."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

import planted
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


def _noise(root, db, **kw):
    spec = NoiseSpec(str(root / "corpus.txt"), n_contexts=50, context_tokens=8, **kw)
    return run_noise(db, spec, progress=False)


def test_a_feature_that_never_fires_in_noise_gets_no_p_value(planted_db):
    root, db = planted_db
    experiment_id, summary = _noise(root, db)
    assert summary["contexts"] == 50 and summary["features_without_null"] >= 1
    con = duckdb.connect(str(db), read_only=True)
    nf = con.execute(
        "SELECT n_contexts, n_active, n_samples, null_mode FROM noise_features WHERE experiment_id = ? AND layer = 0 AND feature = ?",
        [experiment_id, planted.UP],
    ).fetchone()
    assert nf == (50, 0, 0, None)  # the trigger never occurs in the corpus
    rows = con.execute(
        "SELECT p_value, z_score, noise_ratio, experiment_id FROM edge_snr_at(?) WHERE up_layer = 0 AND up_feature = ? AND down_feature = ?",
        [experiment_id, planted.UP, planted.DOWN],
    ).fetchall()
    assert len(rows) == 12  # the planted edge is in every task prompt
    assert all(r[0] is None and r[1] is None and r[2] is None and r[3] == experiment_id for r in rows)
    con.close()


def test_planted_edge_against_an_injected_null_has_the_smallest_p_value(planted_db):
    root, db = planted_db
    experiment_id, summary = _noise(root, db, inject_inactive=True)
    assert summary["features_injected"] >= 1
    con = duckdb.connect(str(db), read_only=True)
    n, mode = con.execute(
        "SELECT n_samples, null_mode FROM noise_features WHERE experiment_id = ? AND layer = 0 AND feature = ?",
        [experiment_id, planted.UP],
    ).fetchone()
    assert mode == "injected" and n > 100
    ps = con.execute(
        "SELECT p_value, noise_n FROM edge_snr_at(?) WHERE up_layer = 0 AND up_feature = ? AND down_feature = ?",
        [experiment_id, planted.UP, planted.DOWN],
    ).fetchall()
    assert len(ps) == 12 and all(p == pytest.approx(1 / (n + 1)) and m == n for p, m in ps)
    # Its suppression of OUT is not specific to the trigger's context: 0.3 writes along OUT's
    # unembedding wherever it is, so the injected null holds effects as large, and p says so.
    lp = con.execute(
        "SELECT min(p_value), avg(dprob) FROM logit_snr_at(?) WHERE layer = 0 AND feature = ? AND token_id = ?",
        [experiment_id, planted.UP, planted.OUT],
    ).fetchone()
    assert lp[1] < -0.004 and lp[0] > 0.05
    con.close()


def test_held_out_unrelated_contexts_look_like_noise(planted_db):
    """Calibration: prompts drawn like the corpus (never part of the baseline) are tested against
    the baseline; their stored edges and logit effects must be significant at most at the nominal rate."""
    root, db = planted_db
    experiment_id, _ = _noise(root, db)
    con = duckdb.connect(str(db), read_only=True)
    for view in ("edge_snr_at", "logit_snr_at"):
        n, below_01, below_05, smallest = con.execute(
            f"SELECT count(p_value), count(*) FILTER (p_value < 0.01), count(*) FILTER (p_value < 0.05), min(p_value) "
            f"FROM {view}(?) s JOIN prompts p USING (run_id, prompt_id) WHERE p.tag = 'like-noise'",
            [experiment_id],
        ).fetchone()
        assert n > 20, view
        assert below_01 <= 0.02 * n and below_05 <= 0.07 * n, (view, n, below_01, below_05)
        # ...and the test can reject: the null is large enough for p far below 0.01.
        assert smallest is not None
    pmin = con.execute(
        "SELECT min(1.0 / (1 + n_samples)) FROM noise_features WHERE experiment_id = ? AND n_samples > 0", [experiment_id]
    ).fetchone()[0]
    assert pmin < 0.005  # well below 0.01 from 50 contexts of 8 tokens
    con.close()


def test_p_value_is_the_empirical_tail_of_the_null(planted_db):
    """For one feature with a null, recompute p of each of its stored edges from noise_null by hand."""
    root, db = planted_db
    experiment_id, _ = _noise(root, db)
    con = duckdb.connect(str(db), read_only=True)
    layer, feature, n = con.execute(
        "SELECT layer, feature, n_samples FROM noise_features WHERE experiment_id = ? AND layer = 0 AND n_samples > 0 "
        "ORDER BY n_samples DESC, feature LIMIT 1",
        [experiment_id],
    ).fetchone()
    null = [r[0] for r in con.execute(
        "SELECT value FROM noise_null WHERE experiment_id = ? AND layer = ? AND feature = ? AND kind = 'edge'",
        [experiment_id, layer, feature],
    ).fetchall()]
    assert len(null) == n
    rows = con.execute(
        "SELECT weight, p_value FROM edge_snr_at(?) WHERE up_layer = ? AND up_feature = ?", [experiment_id, layer, feature]
    ).fetchall()
    assert rows
    for weight, p in rows:
        expected = (1 + sum(v >= np.float32(abs(weight)) for v in null)) / (1 + n)
        assert p == pytest.approx(expected)
    con.close()


def test_views_read_one_noise_experiment_per_run(planted_db):
    root, db = planted_db
    first, _ = _noise(root, db, seed=1)
    second, _ = _noise(root, db, seed=2)
    con = duckdb.connect(str(db), read_only=True)
    edges = con.execute("SELECT count(*) FROM edges").fetchone()[0]
    for view in ("edge_snr",):
        got = con.execute(f"SELECT count(*), count(DISTINCT experiment_id), max(experiment_id) FROM {view}").fetchone()
        assert got == (edges, 1, max(first, second))
    assert con.execute("SELECT count(*) FROM edge_snr_at(?)", [first]).fetchone()[0] == edges
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
