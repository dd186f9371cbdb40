"""The SQL helpers on a database from a real sweep of a tiny random model, checked against
brute force in Python over the raw rows (edges, activations)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest
from brute_paths import expected_chains, got_chains, top_chains
from helpers import PROMPTS, tiny_config

import featuregraph.query.api as api
from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.run import ingest
from featuregraph.store.db import open_database
from featuregraph.store.optimize import optimize

SIGN = {True: -1, False: 1}


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_assets):
    """14 prompts swept into a database, committed two at a time (so the summary is built
    incrementally, with edges recurring across commits)."""
    root = tmp_path_factory.mktemp("swept")
    prompts = root / "prompts.txt"
    more = [
        "The quick brown fox jumps",
        "Copyright (C) 2024",
        "When Mary and John went",
        "Parentheses (like these)",
    ]
    prompts.write_text("\n".join(syn.TOKENIZER_TEXT + PROMPTS + more) + "\n")
    ingest(
        root / "sweep.duckdb",
        prompts,
        tiny_config(tiny_assets, edge_top_k=8),
        progress=False,
        commit_every=2,
        too_long="truncate",
    )
    return root / "sweep.duckdb"


def raw_edges(db):
    return db.fetchall(
        "SELECT run_id, prompt_id, up_layer, up_feature, down_layer, down_feature, weight FROM edges"
    )


def brute_chains(edges, n_edges: int, min_support: int) -> dict[tuple, set[int]]:
    """(start layer, features, signs) -> prompts, by enumerating every prompt's chains."""
    out: dict[tuple, set[int]] = defaultdict(set)
    by_prompt = defaultdict(list)
    for _, p, ul, uf, dl, df, w in edges:
        if dl == ul + 1:
            by_prompt[p].append((ul, uf, df, SIGN[w < 0]))
    for p, es in by_prompt.items():
        starting = defaultdict(list)
        for e in es:
            starting[(e[0], e[1])].append(e)
        chains = [[e] for e in es]
        for _ in range(n_edges - 1):
            chains = [c + [e] for c in chains for e in starting[(c[-1][0] + 1, c[-1][2])]]
        for c in chains:
            out[(c[0][0], tuple([c[0][1]] + [e[2] for e in c]), tuple(e[3] for e in c))].add(p)
    return {k: v for k, v in out.items() if len(v) >= min_support}


def test_summary_matches_the_raw_edges(swept):
    with open_database(swept, read_only=True) as db:
        edges = raw_edges(db)
        agg: dict[tuple, list] = defaultdict(lambda: [0, 0.0, 0.0, 10**9])
        for run, p, ul, uf, dl, df, w in edges:
            a = agg[(run, ul, uf, dl, df, SIGN[w < 0])]
            a[0] += 1
            a[1] += w
            a[2] += w * w
            a[3] = min(a[3], p)
        rows = db.fetchall(
            "SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign, n, sum_weight, "
            "sum_sq_weight, first_prompt_id FROM edge_summary"
        )
        assert len(rows) == len(agg)
        for *key, n, s, ss, first in rows:
            want = agg[tuple(key)]
            assert (n, first) == (want[0], want[3])
            assert math.isclose(s, want[1], rel_tol=1e-5, abs_tol=1e-6)
            assert math.isclose(ss, want[2], rel_tol=1e-5, abs_tol=1e-6)
        recurring = sum(a[0] for a in agg.values() if a[0] >= 2)
        assert db.fetchone("SELECT count(*) FROM edge_occurrences")[0] == recurring > 0


def test_recurring_paths_match_brute_force(swept):
    with open_database(swept, read_only=True) as db:  # 3 SAE layers: chains of up to 2 edges
        expected = brute_chains(raw_edges(db), 2, 2)
        frame = api.recurring_paths(db, n_edges=2, min_support=2)
        assert api.recurring_paths(db, n_edges=3, min_support=2).height == 0
    got = {
        (r["start_layer"], tuple(r["features"]), tuple(r["signs"])): r["support"]
        for r in frame.iter_rows(named=True)
    }
    assert got == {k: len(v) for k, v in expected.items()}
    assert len(got) > 0
    assert frame["support"].to_list() == sorted(frame["support"].to_list(), reverse=True)


def test_top_paths_match_brute_force_ties_included(swept):
    with open_database(swept, read_only=True) as db:
        graph: dict[int, tuple[None, list]] = {}
        for _, p, *edge in raw_edges(db):
            graph.setdefault(p, (None, []))[1].append(tuple(edge))
        want = expected_chains(graph, 2, 2)
        supports = [want[c]["support"] for c in top_chains(want, None)]
        tied = [k for k in range(1, len(supports)) if supports[k - 1] == supports[k]]
        assert tied  # a cut inside a tie is tested below
        for top in (1, tied[0], tied[-1], len(supports) + 5):
            frame = api.recurring_paths(db, 2, 2, top=top)
            assert got_chains(frame) == top_chains(want, top)
            assert frame["support"].to_list() == [want[c]["support"] for c in top_chains(want, top)]


def test_path_prompts_match_brute_force(swept):
    with open_database(swept, read_only=True) as db:
        chains = brute_chains(raw_edges(db), 2, 2)
        (start, feats, signs), prompts = max(chains.items(), key=lambda kv: len(kv[1]))
        path = " -> ".join(f"{start + i}.{f}" for i, f in enumerate(feats))
        frame = api.path_prompts(db, path, signs=list(signs))
        assert set(frame["prompt_id"].to_list()) == prompts


def test_prompt_graph_matches_brute_force(swept):
    with open_database(swept, read_only=True) as db:
        edges = [e for e in raw_edges(db) if e[1] == 3]
        k, min_path = 3, 2
        kept = []
        by_up = defaultdict(list)
        for e in edges:
            by_up[(e[2], e[3])].append(e)
        for es in by_up.values():
            kept += sorted(es, key=lambda e: -abs(e[6]))[:k]

        # longest path through each kept edge (layers only increase, so this terminates)
        def longest_in(node):
            ins = [e for e in kept if (e[4], e[5]) == node]
            return max((1 + longest_in((e[2], e[3])) for e in ins), default=0)

        def longest_out(node):
            outs = [e for e in kept if (e[2], e[3]) == node]
            return max((1 + longest_out((e[4], e[5])) for e in outs), default=0)

        expected = {
            (f"{e[2]}.{e[3]}", f"{e[4]}.{e[5]}"): longest_in((e[2], e[3])) + 1 + longest_out((e[4], e[5]))
            for e in kept
        }
        expected = {key: n for key, n in expected.items() if n >= min_path}
        frame = api.prompt_graph(db, 3, k=k, min_path=min_path)
        assert {(r["up"], r["down"]): r["path_len"] for r in frame.iter_rows(named=True)} == expected


def test_neighbourhood_and_contexts_match_brute_force(swept):
    with open_database(swept, read_only=True) as db:
        edges = raw_edges(db)
        layer, feature = Counter((e[2], e[3]) for e in edges).most_common(1)[0][0]
        node = f"{layer}.{feature}"
        outs = defaultdict(list)
        for e in edges:
            if (e[2], e[3]) == (layer, feature):
                outs[f"{e[4]}.{e[5]}"].append(e[6])
        frame = api.feature_edges(db, node, top=None).filter(direction="out")
        assert {r["neighbour"]: r["n"] for r in frame.iter_rows(named=True)} == {
            k: len(v) for k, v in outs.items()
        }
        for r in frame.iter_rows(named=True):
            ws = outs[r["neighbour"]]
            assert math.isclose(r["mean_weight"], sum(ws) / len(ws), rel_tol=1e-5, abs_tol=1e-7)
            assert r["sign_consistency"] == max(sum(w > 0 for w in ws), sum(w < 0 for w in ws)) / len(ws)

        acts = db.fetchall(
            "SELECT prompt_id, position, activation FROM activations WHERE layer = ? AND feature = ?",
            [layer, feature],
        )
        best = defaultdict(float)
        for p, _, a in acts:
            best[p] = max(best[p], a)
        top = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        contexts = api.top_contexts(db, node, top=3)
        assert contexts["prompt_id"].to_list() == [p for p, _ in top]
        row = contexts.row(0, named=True)
        n_tokens = db.fetchone("SELECT n_tokens FROM prompts WHERE prompt_id = ?", [row["prompt_id"]])[0]
        assert len(row["tokens"]) == len(row["token_activations"]) == n_tokens
        assert math.isclose(max(row["token_activations"]), top[0][1], rel_tol=1e-6)
        logits = api.feature_logits(db, node)
        assert set(logits["direction"].to_list()) <= {"promoted", "suppressed"} and logits.height > 0


def test_optimize_keeps_every_answer(swept, tmp_path):
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(swept.read_bytes())
    with open_database(copy) as db:
        before = (
            api.recurring_paths(db, 2, 2).select("path", "signs", "support").rows(),
            api.prompt_graph(db, 5).select("up", "down", "weight").sort("up", "down").rows(),
        )
        optimize(db)
        after = (
            api.recurring_paths(db, 2, 2).select("path", "signs", "support").rows(),
            api.prompt_graph(db, 5).select("up", "down", "weight").sort("up", "down").rows(),
        )
        # the pair index answers after optimize, ties included, as the full search did before
        assert db.fetchone("SELECT fg_pair_index_usable(2, NULL)")[0]
        graph: dict[int, tuple[None, list]] = {}
        for _, p, *edge in raw_edges(db):
            graph.setdefault(p, (None, []))[1].append(tuple(edge))
        want = expected_chains(graph, 2, 2)
        for top in (1, 3, 10, None):
            assert got_chains(api.recurring_paths(db, 2, 2, top=top)) == top_chains(want, top)
    assert before == after
