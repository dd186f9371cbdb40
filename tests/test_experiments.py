"""Noise baselines, path validation and response curves on a model whose answer is known."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import planted
import pytest
import torch

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


@pytest.mark.parametrize("control", ["matched", "random", "zero"])
def test_path_ablation_beats_its_control(planted_db, control):
    root, db = planted_db
    spec = ValidationSpec((UP_NODE, DOWN_NODE), str(root / "new.jsonl"), control=control)
    experiment_id, s = run_validation(db, spec)
    assert s["prompts"] == s["prompts_with_answer"] == 10 and s["control"] == control
    assert s["path_beats_control"] >= 0.9
    assert s["mean_total_variation_path"] > 3 * s["mean_total_variation_control"]
    assert s["mean_answer_dprob_path"] < -0.05
    for key in ("answer_dlogp", "answer_dlogit_diff"):
        lead = s[key]
        assert lead["path"]["median"] < -1.0 and abs(lead["control"]["median"]) < abs(lead["path"]["median"]) / 3
        assert lead["difference"]["ci95"][1] < 0  # the interval excludes "no difference"
        assert lead["path"]["ci95"][0] <= lead["path"]["median"] <= lead["path"]["ci95"][1]
        # Every prompt: path below control; the exact two-sided sign test is 2 / 2**10.
        assert (lead["path_below_control"], lead["compared"], lead["sign_test_p"]) == (10, 10, 2 / 2**10)
    assert s["path_inactive"] == {}
    con = duckdb.connect(str(db), read_only=True)
    arms = con.execute(
        "SELECT arm, count(*), min(features), max(features) FROM validation_results WHERE experiment_id = ? GROUP BY arm ORDER BY arm",
        [experiment_id],
    ).fetchall()
    assert arms[1] == ("path", 10, f"{UP_NODE},{DOWN_NODE}", f"{UP_NODE},{DOWN_NODE}")
    assert arms[0][1] == 10 and UP_NODE not in arms[0][2]
    if control == "zero":
        assert arms[0][2] == arms[0][3] == "0.0,1.0"
    else:  # drawn from the features active in the prompt, so never inactive, never short
        assert s["control_inactive_prompts"] == s["control_unmatched_prompts"] == 0
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


# -- validation against hand-computed numbers ------------------------------------------------------


def _model(db):
    from featuregraph.ingest.reload import load_run
    from featuregraph.store.db import open_database

    with open_database(db, read_only=True) as con:
        return load_run(con, 1).loaded


def _ids(loaded, text: str) -> list[int]:
    ids = loaded.model.to_tokens(text, prepend_bos=True)[0].tolist()  # the run prepends BOS too
    assert ids[0] == 0 and 0 not in ids[1:]
    return ids


def _strengths(loaded, ids: list[int]) -> dict[int, list[float]]:
    """Per layer: every feature's largest |clean activation| over the positions an ablation changes
    (after the BOS; at the site after the last block, the read position only)."""
    _, cache = loaded.model.run_with_cache(torch.tensor([ids]))
    out = {}
    for site in loaded.sites:
        acts = site.sae.encode(cache[site.hook_name][0]).abs()
        out[site.layer] = (acts[-1] if site.layer == loaded.model.cfg.n_layers else acts[1:].amax(0)).tolist()
    return out


def _ablated_logits(loaded, ids: list[int], features: list[str]) -> torch.Tensor:
    """Last-position logits of a plain hooked forward that subtracts each feature's decoder
    contribution (activation x W_dec row) after the BOS, site by site."""
    nodes = [tuple(map(int, f.split("."))) for f in features]
    hooks = []
    for site in loaded.sites:
        feats = [f for layer, f in nodes if layer == site.layer]
        if feats:

            def subtract(x, hook, site=site, feats=feats):
                acts = site.sae.encode(x)[0][:, feats]
                acts[0] = 0.0
                return x - (acts @ site.sae.W_dec[feats])[None]

            hooks.append((site.hook_name, subtract))
    return loaded.model.run_with_hooks(torch.tensor([ids]), fwd_hooks=hooks)[0, -1].float()


RESULTS = """
SELECT prompt_index, text, arm, features, answer_token_id, answer_dlogp, wrong_token_id, logit_diff_clean,
       answer_dlogit_diff, answer_dprob, inactive_features, activation_ratio, n_unmatched
FROM validation_results WHERE experiment_id = ? ORDER BY prompt_index, arm
"""


def _results(db, experiment_id: int) -> list[dict]:
    con = duckdb.connect(str(db), read_only=True)
    cur = con.execute(RESULTS, [experiment_id])
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    con.close()
    return rows


@torch.no_grad()
def test_answer_logprob_and_logit_difference_equal_a_plain_hooked_forward(planted_db):
    root, db = planted_db
    experiment_id, _ = run_validation(db, ValidationSpec((UP_NODE, DOWN_NODE), str(root / "new.jsonl")))
    loaded = _model(db)
    rows = _results(db, experiment_id)
    assert len(rows) == 20
    for r in rows:
        ids = _ids(loaded, r["text"])
        clean = loaded.model(torch.tensor([ids]))[0, -1].float()
        ablated = _ablated_logits(loaded, ids, r["features"].split(","))
        a = planted.OUT
        wrong = max((t for t in range(planted.V) if t != a), key=lambda t: float(clean[t]))
        assert (r["answer_token_id"], r["wrong_token_id"]) == (a, wrong)
        lp_clean, lp_abl = torch.log_softmax(clean, -1), torch.log_softmax(ablated, -1)
        assert r["answer_dlogp"] == pytest.approx(float(lp_abl[a] - lp_clean[a]), abs=1e-4)
        assert r["answer_dprob"] == pytest.approx(float(lp_abl[a].exp() - lp_clean[a].exp()), abs=1e-5)
        assert r["logit_diff_clean"] == pytest.approx(float(clean[a] - clean[wrong]), abs=1e-4)
        # Same wrong token in the ablated run, even where another token now leads.
        want = float((ablated[a] - ablated[wrong]) - (clean[a] - clean[wrong]))
        assert r["answer_dlogit_diff"] == pytest.approx(want, abs=1e-4)
    assert min(r["answer_dlogp"] for r in rows if r["arm"] == "path") < -1.0  # the numbers are not all ~0


MATCH_TOLERANCE = 2.0  # where the prompt has a comparable active feature, the control is within this factor


@torch.no_grad()
@pytest.mark.parametrize("path", [(UP_NODE, DOWN_NODE), ("0.6",)])
def test_matched_controls_are_active_and_closest_in_activation(planted_db, path):
    root, db = planted_db
    experiment_id, s = run_validation(db, ValidationSpec(path, str(root / "new.jsonl"), control="matched", seed=3))
    loaded = _model(db)
    path_nodes = [tuple(map(int, f.split("."))) for f in path]
    controls = [r for r in _results(db, experiment_id) if r["arm"] == "control"]
    assert len(controls) == 10 and s["control_inactive_prompts"] == s["control_unmatched_prompts"] == 0
    for r in controls:
        strength = _strengths(loaded, _ids(loaded, r["text"]))
        ctrl = [tuple(map(int, f.split("."))) for f in r["features"].split(",")]
        assert sorted(layer for layer, _ in ctrl) == sorted(layer for layer, _ in path_nodes)  # same sites, same count
        assert r["inactive_features"] == "" and r["n_unmatched"] == 0
        for (layer, p), (c_layer, c) in zip(sorted(path_nodes), sorted(ctrl), strict=True):
            s_l = strength[layer]
            assert c_layer == layer and c != p and s_l[c] > 0  # active in this prompt, not a path feature
            candidates = [f for f in range(len(s_l)) if s_l[f] > 0 and f != p]
            assert abs(s_l[c] - s_l[p]) == pytest.approx(min(abs(s_l[f] - s_l[p]) for f in candidates), abs=1e-6)
        ratio = sum(strength[layer][f] for layer, f in ctrl) / sum(strength[layer][f] for layer, f in path_nodes)
        assert r["activation_ratio"] == pytest.approx(ratio, rel=1e-5)
    if path == ("0.6",):  # several active features of its size in every prompt: the match is close
        assert all(1 / MATCH_TOLERANCE <= r["activation_ratio"] <= MATCH_TOLERANCE for r in controls)
        assert not any("activation" in w for w in s["warnings"])
    else:  # 1.5 fires ~20x harder than anything else at the read position: said, not hidden
        assert any("times the path's activation" in w for w in s["warnings"])


@torch.no_grad()
def test_validation_warns_about_inactive_path_features(planted_db):
    from typer.testing import CliRunner

    from featuregraph.cli import app

    root, db = planted_db
    loaded = _model(db)
    texts = [json.loads(line)["text"] for line in (root / "new.jsonl").read_text().splitlines()]
    # 1.2 never fires at the read position of these prompts (the only one its site's ablation uses).
    assert all(_strengths(loaded, _ids(loaded, t))[1][2] == 0 for t in texts)
    experiment_id, s = run_validation(db, ValidationSpec((UP_NODE, "1.2"), str(root / "new.jsonl")))
    assert s["path_inactive"] == {"1.2": 10}
    assert any("path feature 1.2 is inactive in 10 of 10 prompts" in w for w in s["warnings"])
    path_rows = [r for r in _results(db, experiment_id) if r["arm"] == "path"]
    assert [r["inactive_features"] for r in path_rows] == ["1.2"] * 10

    out = CliRunner().invoke(app, ["validate", str(db), "--path", f"{UP_NODE},1.2", "--prompts", str(root / "new.jsonl")])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "matched control" in lines[0]
    assert lines[1].startswith("answer log-prob change: path median ") and "sign test p = 0.002" in lines[1]
    assert "warning: path feature 1.2 is inactive in 10 of 10 prompts: ablating it there changes nothing" in lines


@torch.no_grad()
def test_zero_control_is_flagged_where_inactive(planted_db):
    root, db = planted_db
    experiment_id, s = run_validation(db, ValidationSpec((UP_NODE, DOWN_NODE), str(root / "new.jsonl"), control="zero"))
    loaded = _model(db)
    flagged = 0
    for r in (r for r in _results(db, experiment_id) if r["arm"] == "control"):
        strength = _strengths(loaded, _ids(loaded, r["text"]))
        hand = [f for f in ("0.0", "1.0") if strength[int(f[0])][0] == 0]
        assert r["inactive_features"] == ",".join(hand)
        flagged += bool(hand)
    assert flagged >= 1 and s["control_inactive_prompts"] == flagged
    assert any(f"control features are inactive in {flagged} of 10 prompts" in w for w in s["warnings"])


# -- paired statistics on hand-made data -----------------------------------------------------------


def test_sign_test_is_the_exact_two_sided_binomial():
    from featuregraph.ingest.validation_stats import sign_test

    # 27 below, 3 above, 2 ties (dropped): p = 2 * (C(30,0) + C(30,1) + C(30,2) + C(30,3)) / 2**30.
    below, n, p = sign_test(np.array([-1.0] * 27 + [0.5] * 3 + [0.0] * 2))
    assert (below, n) == (27, 30) and p == pytest.approx(2 * (1 + 30 + 435 + 4060) / 2**30, rel=1e-12)
    assert sign_test(np.array([-2.0, -1.0, -3.0])) == (3, 3, 0.25)  # 2 * 1/8
    assert sign_test(np.array([-1.0, 1.0])) == (1, 2, 1.0)  # 2 * 3/4, capped at 1
    assert sign_test(np.zeros(4)) == (0, 0, 1.0)


def test_bootstrap_resamples_prompts_with_replacement_and_stays_paired():
    from featuregraph.ingest.validation_stats import (
        bootstrap_indices,
        bootstrap_medians,
        paired_summary,
        percentile_interval,
    )

    # Medians of 3 draws from {1, 2, 3}: P(1) = P(3) = 7/27 (two or three of that value), P(2) = 13/27.
    medians = bootstrap_medians(np.array([1.0, 2.0, 3.0]), bootstrap_indices(3, seed=0))
    assert medians.shape == (2000,)
    for value, prob in ((1.0, 7 / 27), (2.0, 13 / 27), (3.0, 7 / 27)):
        assert (medians == value).mean() == pytest.approx(prob, abs=0.03)  # about 3 standard errors
    assert percentile_interval(np.arange(101.0)) == pytest.approx([2.5, 97.5])

    control = np.array([0.3, -2.0, 5.0, 1.1, -0.7, 2.2, 0.0, 4.4])
    s = paired_summary(control - 1.0, control, seed=7)
    # Every prompt moves by exactly -1: the paired difference has no spread although the arms do.
    assert s["difference"] == {"mean": pytest.approx(-1.0), "median": pytest.approx(-1.0), "ci95": [pytest.approx(-1.0)] * 2}
    assert s["path"]["median"] == pytest.approx(float(np.median(control)) - 1.0)
    lo, hi = s["path"]["ci95"]
    assert lo < s["path"]["median"] < hi and hi - lo > 1.0
    assert (s["path_below_control"], s["compared"], s["sign_test_p"]) == (8, 8, 2 / 2**8)
    assert s == paired_summary(control - 1.0, control, seed=7)  # a fixed seed: the same interval every time
    with pytest.raises(ValueError):
        paired_summary(np.zeros(3), np.zeros(4), seed=0)
