"""The summary as base + delta: exact after every commit, across compactions, crashes and migration."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import defaultdict

import duckdb
import numpy as np
import pytest
from helpers import insert_run
from query_graphs import new_run, prompt_result

from featuregraph.store import summary as summary_mod
from featuregraph.store.db import open_database
from featuregraph.store.migrate import available_migrations
from featuregraph.store.runs import write_prompt_results
from featuregraph.store.summary import (
    COMPACT_FRACTION_ENV,
    COMPACT_ROWS_ENV,
    compact_threshold,
    delta_rows,
    fold_delta,
    rebuild_summary,
)  # fmt: skip


def random_graph(seed: int, n_prompts: int, n_layers: int = 4, n_features: int = 5) -> dict[int, list]:
    """Prompts with edges drawn from a small feature space, so that many recur with both signs.
    Weights are multiples of 1/8 (exact in float32)."""
    rng = np.random.default_rng(seed)
    graph = {}
    for p in range(n_prompts):
        edges = set()
        for _ in range(rng.integers(1, 12)):
            ul = int(rng.integers(0, n_layers - 1))
            edges.add((ul, int(rng.integers(n_features)), ul + 1, int(rng.integers(n_features))))
        graph[p] = [(*e, float(rng.choice([-1, 1]) * rng.integers(1, 9) / 8)) for e in sorted(edges)]
    return graph


def reference(graph: dict[int, list]) -> tuple[dict, set]:
    """Plain Python: per signed edge (n, sum weight, first prompt, first ablation max), and the
    occurrences (edge, sign, prompt, weight, ablation max) of the edges with n >= 2."""
    occ = defaultdict(list)
    for p, edges in graph.items():
        ablation_max = defaultdict(float)
        for ul, uf, _, _, w in edges:
            ablation_max[(ul, uf)] = max(ablation_max[(ul, uf)], abs(w))
        for ul, uf, dl, df, w in edges:
            occ[(ul, uf, dl, df, -1 if w < 0 else 1)].append((p, w, ablation_max[(ul, uf)]))
    summary = {k: (len(v), sum(w for _, w, _ in v), min(v)[0], min(v)[2]) for k, v in occ.items()}
    recurring = {(*k, p, w, m) for k, v in occ.items() if len(v) >= 2 for p, w, m in v}
    return summary, recurring


def stored(db, run: int) -> tuple[dict, set]:
    summary = {
        tuple(r[:5]): (r[5], pytest.approx(r[6], abs=1e-5), r[7], r[8])
        for r in db.fetchall(
            "SELECT up_layer, up_feature, down_layer, down_feature, sign, n, sum_weight, first_prompt_id, "
            "first_ablation_max_abs FROM edge_summary WHERE run_id = ?", [run])
    }  # fmt: skip
    occurrences = db.fetchall(
        "SELECT up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight, ablation_max_abs "
        "FROM edge_occurrences WHERE run_id = ?", [run])  # fmt: skip
    assert len(occurrences) == len(set(occurrences)), "an occurrence listed twice"
    return summary, set(occurrences)


def neighbourhoods(graph: dict[int, list]) -> dict[str, dict]:
    """Plain Python: per feature, per (direction, neighbour), (n, n_pos, n_neg, mean, std) over
    every prompt's edges, both signs together, as feature_edges defines them."""
    weights = defaultdict(list)
    for edges in graph.values():
        for ul, uf, dl, df, w in edges:
            weights[(f"{ul}.{uf}", "out", f"{dl}.{df}")].append(w)
            weights[(f"{dl}.{df}", "in", f"{ul}.{uf}")].append(w)
    out: dict[str, dict] = defaultdict(dict)
    for (node, direction, other), ws in weights.items():
        n = len(ws)
        std = float(np.std(ws, ddof=1)) if n > 1 else None
        out[node][(direction, other)] = (n, sum(w > 0 for w in ws), sum(w < 0 for w in ws), sum(ws) / n, std)
    return out


def check_neighbourhoods(db, run: int, graph: dict[int, list]) -> None:
    """feature_edges (base and delta tables, migration 0018) against :func:`neighbourhoods`."""
    for node, want in neighbourhoods(graph).items():
        rows = db.fetchall(
            "SELECT direction, neighbour, n, n_pos, n_neg, mean_weight, std_weight "
            "FROM feature_edges(?, run := ?, top := NULL)", [node, run])  # fmt: skip
        got = {(d, nb): (n, pos, neg, mean, std) for d, nb, n, pos, neg, mean, std in rows}
        assert got.keys() == want.keys(), node
        for key, (n, pos, neg, mean, std) in want.items():
            assert got[key][:3] == (n, pos, neg), (node, key)
            assert got[key][3] == pytest.approx(mean, abs=1e-5), (node, key)
            assert got[key][4] == (None if std is None else pytest.approx(std, abs=1e-4)), (node, key)


def check(db, run: int, graph: dict[int, list], neighbourhoods: bool = False) -> None:
    want_summary, want_occ = reference(graph)
    got_summary, got_occ = stored(db, run)
    # one base row per signed edge: a compaction deletes the rows it re-inserts with new totals
    assert db.fetchone(
        "SELECT count(*) - count(DISTINCT (run_id, up_layer, up_feature, down_layer, down_feature, sign)) "
        "FROM edge_summary_base")[0] == 0  # fmt: skip
    # and it keeps n_sorted, the count at the last rebuild, which its sorted occurrences carry too
    assert db.fetchone(
        "SELECT count(*) FROM edge_summary_base s JOIN edge_occurrences_base o "
        "USING (run_id, up_layer, up_feature, down_layer, down_feature, sign) "
        "WHERE o.n_sorted IS NOT NULL AND s.n_sorted IS DISTINCT FROM o.n_sorted")[0] == 0  # fmt: skip
    assert got_summary == want_summary
    assert got_occ == want_occ
    if neighbourhoods:
        check_neighbourhoods(db, run, graph)


def test_the_summary_is_exact_after_every_commit_and_compaction(tmp_path, monkeypatch):
    monkeypatch.setenv(COMPACT_ROWS_ENV, "0")  # folds only where the test asks
    graph = random_graph(1, 40)
    with open_database(tmp_path / "fg.duckdb") as db:
        run = new_run(db)
        seen: dict[int, list] = {}
        for i, start in enumerate(range(0, 40, 4)):
            write_prompt_results(db, run, [prompt_result(p, graph[p]) for p in range(start, start + 4)])
            seen.update({p: graph[p] for p in range(start, start + 4)})
            check(db, run, seen, neighbourhoods=True)  # base and delta both non-empty from i == 2 on
            if i % 3 == 1:
                assert delta_rows(db) > 0
                fold_delta(db)
                assert delta_rows(db) == 0
                check(db, run, seen, neighbourhoods=True)
            if i == 6:
                rebuild_summary(db)
                check(db, run, seen, neighbourhoods=True)


def test_an_automatic_compaction_past_the_threshold(tmp_path, monkeypatch):
    monkeypatch.setenv(COMPACT_ROWS_ENV, "30")
    graph = random_graph(2, 30)
    with open_database(tmp_path / "fg.duckdb") as db:
        run = new_run(db)
        folds = 0
        for start in range(0, 30, 3):
            write_prompt_results(db, run, [prompt_result(p, graph[p]) for p in range(start, start + 3)])
            left = delta_rows(db)
            assert left < 30  # folded as soon as it passed the threshold
            folds += left == 0
            check(db, run, {p: graph[p] for p in range(start + 3)})
        assert folds >= 2


def test_the_threshold_is_a_fraction_of_the_base_with_a_floor(monkeypatch):
    monkeypatch.delenv(COMPACT_ROWS_ENV, raising=False)
    monkeypatch.delenv(COMPACT_FRACTION_ENV, raising=False)
    assert compact_threshold(0) == 4_000_000
    assert compact_threshold(39_000_000) == 4_000_000  # 0.1 x 39 M is below the floor
    assert compact_threshold(100_000_000) == 10_000_000
    monkeypatch.setenv(COMPACT_FRACTION_ENV, "0.25")
    assert compact_threshold(100_000_000) == 25_000_000
    monkeypatch.setenv(COMPACT_ROWS_ENV, "1000")  # a fixed threshold overrides the rule
    assert compact_threshold(100_000_000) == 1000
    monkeypatch.setenv(COMPACT_ROWS_ENV, "0")
    assert compact_threshold(100_000_000) == 0


def test_automatic_compactions_follow_the_base(tmp_path, monkeypatch):
    """With floor 20 and fraction 0.5, a write folds exactly when the delta reaches
    max(20, 0.5 x the base's signed edges), counted here from the prompts folded so far."""
    monkeypatch.delenv(COMPACT_ROWS_ENV, raising=False)
    monkeypatch.setenv(COMPACT_FRACTION_ENV, "0.5")
    monkeypatch.setattr(summary_mod, "DEFAULT_COMPACT_ROWS", 20)
    graph = random_graph(7, 120, n_layers=6, n_features=9)
    with open_database(tmp_path / "fg.duckdb") as db:
        run = new_run(db)
        folded_upto, delta, folds, big_base_folds = 0, 0, 0, 0
        for start in range(0, 120, 2):
            rows = sum(len(graph[p]) for p in (start, start + 1))
            base = len(reference({p: graph[p] for p in range(folded_upto)})[0])
            write_prompt_results(db, run, [prompt_result(p, graph[p]) for p in (start, start + 1)])
            if delta + rows >= max(20, base // 2):
                assert delta_rows(db) == 0, (start, base)
                folded_upto, delta, folds = start + 2, 0, folds + 1
                big_base_folds += base // 2 > 20
            else:
                assert delta_rows(db) == delta + rows, (start, base)
                delta += rows
            check(db, run, {p: graph[p] for p in range(start + 2)})
        assert folds >= 3 and big_base_folds >= 2  # the rule, not the floor, decided some folds


def test_a_second_run_does_not_mix_with_the_first(tmp_path, monkeypatch):
    monkeypatch.setenv(COMPACT_ROWS_ENV, "0")
    a, b = random_graph(3, 12), random_graph(4, 12)
    with open_database(tmp_path / "fg.duckdb") as db:
        run_a = new_run(db, "a")
        write_prompt_results(db, run_a, [prompt_result(p, a[p]) for p in a])
        fold_delta(db)
        run_b = new_run(db, "b")
        write_prompt_results(db, run_b, [prompt_result(p, b[p]) for p in b])
        check(db, run_a, a)
        check(db, run_b, b)


CRASH_DURING_FOLD = """
import os, signal, sys
from featuregraph.store.db import open_database
from featuregraph.store import summary
db = open_database(sys.argv[1])
with db.transaction():
    summary._fold_statements(db)
    os.kill(os.getpid(), signal.SIGKILL)  # kill -9 inside the compaction, before it commits
"""


def test_a_crash_during_compaction_leaves_the_summary_exact(tmp_path, monkeypatch):
    monkeypatch.setenv(COMPACT_ROWS_ENV, "0")
    graph = random_graph(5, 20)
    path = tmp_path / "fg.duckdb"
    with open_database(path) as db:
        run = new_run(db)
        write_prompt_results(db, run, [prompt_result(p, graph[p]) for p in range(10)])
        fold_delta(db)
        write_prompt_results(db, run, [prompt_result(p, graph[p]) for p in range(10, 20)])
        before = delta_rows(db)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_DURING_FOLD), str(path)],
                          env={**os.environ, COMPACT_ROWS_ENV: "0"})  # fmt: skip
    assert proc.returncode == -9
    with open_database(path) as db:
        assert delta_rows(db) == before  # the compaction never happened
        check(db, run, graph)
        fold_delta(db)  # and can be run again
        check(db, run, graph)
        write_prompt_results(db, run, [prompt_result(20, [(0, 1, 1, 2, 0.5)])])
        check(db, run, {**graph, 20: [(0, 1, 1, 2, 0.5)]})


def test_migration_0012_keeps_an_older_databases_summary(tmp_path):
    graph = random_graph(6, 15)
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )
    for mig in (m for m in available_migrations() if m.version <= 10):
        con.execute(mig.sql)
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [mig.version, mig.name])
    insert_run(con, "old", "complete")
    for p, edges in graph.items():
        con.execute("INSERT INTO prompts (run_id, prompt_id, text, text_sha256, n_tokens, n_ablations, "
                    "ingested_at) VALUES (1, ?, 'x', 'h', 2, 1, now())", [p])  # fmt: skip
        con.executemany("INSERT INTO edges VALUES (1, ?, ?, ?, ?, ?, ?)", [[p, *e] for e in edges])
    # the derived tables as migration 0010's featuregraph built them (what rebuild_summary ran then)
    con.execute("""
        INSERT INTO edge_summary SELECT run_id, up_layer, up_feature, down_layer, down_feature, fg_sign(weight),
            count(*), sum(weight), sum(weight * weight), min(prompt_id), CASE WHEN count(*) >= 2 THEN count(*) END,
            arg_min(m, prompt_id)
        FROM (SELECT *, max(abs(weight)) OVER (PARTITION BY run_id, prompt_id, up_layer, up_feature) AS m FROM edges)
        GROUP BY ALL""")
    con.execute("""
        INSERT INTO edge_occurrences SELECT e.run_id, s.n, e.up_layer, e.up_feature, e.down_layer, e.down_feature,
            s.sign, e.prompt_id, e.weight, e.m
        FROM (SELECT *, max(abs(weight)) OVER (PARTITION BY run_id, prompt_id, up_layer, up_feature) AS m FROM edges) e
        JOIN edge_summary s USING (run_id, up_layer, up_feature, down_layer, down_feature)
        WHERE s.sign = fg_sign(e.weight) AND s.n >= 2""")
    before = con.execute("SELECT * FROM edge_summary ORDER BY ALL").fetchall()
    con.close()
    with open_database(path) as db:  # applies 0011 and 0012
        assert db.fetchall("SELECT * FROM edge_summary ORDER BY ALL") == before
        assert db.fetchone("SELECT count(*) FROM edge_summary_base")[0] == len(before)
        check(db, 1, graph)
        later = random_graph(7, 5)
        write_prompt_results(db, 1, [prompt_result(100 + p, later[p]) for p in later])
        check(db, 1, {**graph, **{100 + p: later[p] for p in later}})
