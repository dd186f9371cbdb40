"""``featuregraph demo`` on a small subset of the bundled prompts: what it makes, and running it twice."""

from __future__ import annotations

import json
import re
from collections import Counter

import duckdb
import pytest
from typer.testing import CliRunner

from featuregraph.cli import app
from featuregraph.demo.edge_kinds import edge_kinds
from featuregraph.store.db import open_database


def _edge_kinds_by_hand(con, top_n: int) -> dict[str, Counter]:
    """Per tag, the kinds of each prompt's top_n strongest edges, from plain rows (brute force)."""
    out: dict[str, Counter] = {}
    for prompt_id, tag in con.execute("SELECT prompt_id, tag FROM prompts WHERE run_id = 1").fetchall():
        acts = con.execute(
            "SELECT position, layer, feature, activation FROM activations WHERE run_id = 1 AND prompt_id = ?", [prompt_id]
        ).fetchall()
        last = max(a[0] for a in acts)
        clean = {(a[1], a[2]): a[3] for a in acts if a[0] == last}
        edges = con.execute(
            "SELECT up_layer, up_feature, down_layer, down_feature, weight FROM edges WHERE run_id = 1 AND prompt_id = ?", [prompt_id]
        ).fetchall()
        edges.sort(key=lambda e: (-abs(e[4]), e[:4]))
        counts = out.setdefault(tag, Counter())
        for *_, down_layer, down_feature, weight in edges[:top_n]:
            a = clean.get((down_layer, down_feature), 0.0)
            kind = "enters" if a == 0 else "leaves" if abs(a + weight) <= 1e-5 * max(1.0, a) else "graded"
            counts[kind] += 1
            counts["edges"] += 1
    return out


def test_demo_on_a_subset_is_safe_to_run_twice(tmp_path):
    db = tmp_path / "demo.duckdb"
    # Three prompts per task: the fewest for which a path can recur (in 2 prompts) and be validated.
    args = ["demo", "--db", str(db), "--per-tag", "3", "--noise-contexts", "2", "--no-open", "-q", "--device", "cpu"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "noise baseline: experiment 1" in first.output
    assert "featuregraph dashboard" in first.output
    con = duckdb.connect(str(db), read_only=True)
    tags = dict(con.execute("SELECT tag, count(*) FROM prompts WHERE run_id = 1 GROUP BY tag").fetchall())
    # three prompts per task, and three held-out filler prompts: the calibration check
    assert tags == {"acronym": 3, "ioi": 3, "paren": 3, "filler-heldout": 3}
    before = con.execute("SELECT count(*) FROM edges").fetchone()[0]
    assert before > 0
    assert con.execute("SELECT count(*) FROM edge_snr WHERE p_value IS NOT NULL").fetchone()[0] > 0
    assert "filler-heldout" in first.output and "p<0.01" in first.output
    # What the strongest edges are (a feature switched off / on, or graded), against brute force.
    by_hand = _edge_kinds_by_hand(con, 30)
    with open_database(db, read_only=True) as fdb:
        kinds = edge_kinds(fdb, 1, 30)
    assert {k["tag"]: Counter({n: k[n] for n in ("edges", "enters", "leaves", "graded") if k[n]}) for k in kinds} == by_hand
    for k in kinds:
        assert k["edges"] == k["enters"] + k["leaves"] + k["graded"]
        assert re.search(rf"^  {k['tag']}\s+{100 * k['leaves'] / k['edges']:.1f}% off", first.output, re.M), first.output
    # The closing table: each validated task's top path on 3 of its held-out prompts, the answer's
    # log-prob change of path and matched control with intervals, and the verdict.
    validated = re.findall(r"validation of (\w+) path #(\d) (.+) on 3 held-out \1 prompts \(experiment (\d+)", first.output)
    assert validated, first.output
    stored = con.execute(
        "SELECT experiment_id, spec FROM experiments WHERE kind = 'validation' ORDER BY experiment_id"
    ).fetchall()
    assert [int(e) for *_, e in validated] == [e for e, _ in stored]
    for tag, rank, path, experiment in validated:
        # path #k is the k-th one listed for its task
        listed = re.search(rf"^{tag}: most {tag}-specific recurring 2-edge paths.*\n((?:  .+\n)+)", first.output, re.M)
        assert listed and listed.group(1).splitlines()[int(rank) - 1].split("  signs")[0].strip() == path
        spec = json.loads(dict(stored)[int(experiment)])
        assert spec["control"] == "matched" and spec["prompts_source"].endswith("heldout.jsonl")
        assert [str(f) for f in spec["features"]] == path.split(" -> ")
    assert first.output.count("answer log-prob change: path median") == len(validated)
    assert first.output.count("  target (path median <= 3x control median") == len(validated)
    n_validations = len(stored)
    # The attention stage: a second, mixed-site run over the IOI prompts with DFA, and its report
    # checked against the stored rows by hand.
    assert "attention-output SAEs (run 2, IOI prompts)" in first.output
    kinds = Counter(k for (k,) in con.execute("SELECT site_kind FROM run_saes WHERE run_id = 2").fetchall())
    assert kinds == {"resid": 5, "attn_z": 4}
    n_dfa = con.execute("SELECT count(*) FROM dfa_features WHERE run_id = 2").fetchone()[0]
    assert n_dfa > 0
    _check_attention_report(con, first.output)
    con.close()

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "noise baseline: experiment" not in second.output  # already there: not computed again
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM edges").fetchone()[0] == before
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM dfa_features").fetchone()[0] == n_dfa  # DFA not run again
    # The noise baseline and the validations are read back, not run again.
    assert con.execute("SELECT count(*) FROM experiments").fetchone()[0] == 1 + n_validations
    assert second.output.count("answer log-prob change: path median") == len(validated)
    con.close()


def _check_attention_report(con, output: str) -> None:
    """The report's first attention feature and its numbers, recomputed from the stored rows."""
    answers = {}
    vocab = dict(con.execute("SELECT token, token_id FROM vocab WHERE run_id = 2").fetchall())
    for pid, meta in con.execute("SELECT prompt_id, metadata FROM prompts WHERE run_id = 2 AND tag = 'ioi'").fetchall():
        answers[pid] = vocab[json.loads(meta)["answer"]]
    sums: dict[tuple[int, int], float] = {}
    rows = con.execute("SELECT prompt_id, layer, feature, token_id, dlogp FROM logit_effects WHERE run_id = 2").fetchall()
    for pid, layer, feature, token_id, dlogp in rows:
        if feature >> 28 == 1 and answers.get(pid) == token_id:
            sums[(layer, feature)] = sums.get((layer, feature), 0.0) + dlogp
    if not sums:
        assert "no attention feature's ablation stored a change of the answer" in output
        return
    (layer, feature), total = min(sums.items(), key=lambda kv: (kv[1], kv[0][1]))
    first = re.search(r"^\s+(\S+)  answer log-prob ([-+][0-9.]+) per prompt", output, re.M)
    assert first and first.group(1) == f"{layer}.att.{feature - (1 << 28)}", output
    assert float(first.group(2)) == pytest.approx(total / len(answers), abs=6e-4)
    # Share of the feature's positive head-by-source DFA parts at the answer's earlier positions.
    names = {(pid, pos) for pid, pos, tok in con.execute("SELECT prompt_id, position, token_id FROM tokens WHERE run_id = 2").fetchall()
             if answers.get(pid) == tok}  # fmt: skip
    parts = con.execute(
        "SELECT prompt_id, source_position, value FROM dfa_parts WHERE run_id = 2 AND layer = ? AND feature = ? "
        "AND method = 'dfa' AND term = 'head_source' AND value > 0", [layer, feature]
    ).fetchall()
    if parts:
        share = sum(v for p, s, v in parts if (p, s) in names) / sum(v for *_, v in parts)
        shown = re.search(r"(\d+)% of its positive DFA", output.split(first.group(0), 1)[1])
        assert shown and int(shown.group(1)) == round(100 * share)
