"""Top-k recurring paths (migration 0011) against brute force: recurring_paths(top := N) at any
support, ties, steps that skip layers, every filter, ranking by strength; path_prompts and
tag_specific_paths on the same graphs.

The graphs: TIES, small enough to read, where several chains share the N-th support and one chain
takes a step over a layer; and a seeded random graph (layers 0..4, three features per layer,
edges to the next layer and over one, 30 prompts in three tags), dense enough for many ties.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from brute_paths import expected_chains, got_chains, sign, top_chains
from query_graphs import new_run, write_graph

import featuregraph.query.api as api
from featuregraph.errors import InputError
from featuregraph.store.db import open_database

# Chains 0.1 -> 1.1 -> 2.1 (prompts 0-3), 0.2 -> 1.2 -> 2.2 and 0.3 -> 2.3 -> 3.3 (a skip: 0 -> 2;
# prompts 0-2 each), 0.4 -> 1.4 -> 2.4 (prompts 0-2, signs + -): three chains tie at support 3.
TIES: dict[int, tuple[str, list]] = {
    p: ("a" if p < 2 else "b", [
        *([(0, 1, 1, 1, 0.5), (1, 1, 2, 1, 0.4)] if p < 4 else []),
        *([(0, 2, 1, 2, 0.3), (1, 2, 2, 2, 0.3), (0, 3, 2, 3, 0.6), (2, 3, 3, 3, -0.2),
           (0, 4, 1, 4, 0.2), (1, 4, 2, 4, -0.2)] if p < 3 else []),
        (0, 5, 1, 5, 0.1 * (p + 1)),
    ])
    for p in range(5)
}  # fmt: skip

LAYERS, FEATURES, PROMPTS = 5, 3, 30


def random_graph(seed: int = 11) -> dict[int, tuple[str, list]]:
    rng = np.random.default_rng(seed)
    graph = {}
    for p in range(PROMPTS):
        edges = []
        for ul, uf, df in itertools.product(range(LAYERS), range(FEATURES), range(FEATURES)):
            for dl in (ul + 1, ul + 2):
                if dl < LAYERS and rng.random() < (0.6 if dl == ul + 1 else 0.25):
                    edges.append((ul, uf, dl, df, float(np.float32(rng.choice([-1, 1]) * rng.uniform(0.05, 1.0)))))
        graph[p] = ("abc"[p % 3], edges)
    return graph


RANDOM = random_graph()


def database(path, graph):
    with open_database(path) as db:
        write_graph(db, new_run(db, layers=range(LAYERS)), graph, group=4)
    return path


@pytest.fixture(scope="module")
def ties_db(tmp_path_factory):
    with open_database(database(tmp_path_factory.mktemp("ties") / "t.duckdb", TIES), read_only=True) as db:
        yield db


@pytest.fixture(scope="module")
def random_db(tmp_path_factory):
    with open_database(database(tmp_path_factory.mktemp("rand") / "r.duckdb", RANDOM), read_only=True) as db:
        yield db


def relative_strong(graph, min_weight=0.0, min_rel=0.0):
    """The strength filter of fg_strong without p-values, over ``graph``."""

    def strong(prompt, edge):
        biggest = max(abs(e[4]) for e in graph[prompt][1] if e[:2] == edge[:2])
        return abs(edge[4]) >= min_weight and (min_rel == 0 or abs(edge[4]) >= min_rel * biggest)

    return strong


def check_rows(frame, want: dict, order: list) -> None:
    """``frame`` lists exactly the chains ``order`` in that order, with the brute-force numbers."""
    assert got_chains(frame) == order
    for row, chain in zip(frame.iter_rows(named=True), order, strict=True):
        w = want[chain]
        assert (row["support"], row["support_any"]) == (w["support"], w["support_any"]), chain
        assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(row["mean_weights"], w["mean_weights"], strict=True))
        assert math.isclose(row["strength"], w["strength"], rel_tol=1e-5)
        layers, feats, _ = chain
        assert row["path"] == " -> ".join(f"{la}.{f}" for la, f in zip(layers, feats, strict=True))


def test_ties_at_the_nth_support_are_cut_the_documented_way(ties_db):
    want = expected_chains(TIES, 2, 2)
    ordered = top_chains(want, None)
    assert [want[c]["support"] for c in ordered] == [4, 3, 3, 3]  # the three-way tie
    assert ((0, 2, 3), (3, 3, 3), (1, -1)) in want  # the chain with a step over layer 1
    for top in (1, 2, 3, 4, 10, None):
        check_rows(api.recurring_paths(ties_db, 2, 2, top=top), want, top_chains(want, top))
    # the same answer from plain SQL
    rows = ties_db.fetchall("SELECT path, support FROM recurring_paths(n_edges := 2, top := 2)")
    assert rows == [("0.1 -> 1.1 -> 2.1", 4), ("0.2 -> 1.2 -> 2.2", 3)]


@pytest.mark.parametrize("n_edges,min_support", [(2, 2), (2, 3), (2, 7), (3, 2), (3, 3), (3, 5), (4, 2), (4, 3)])
def test_top_k_equals_brute_force(random_db, n_edges, min_support):
    want = expected_chains(RANDOM, n_edges, min_support)
    assert want
    everything = api.recurring_paths(random_db, n_edges, min_support)
    check_rows(everything, want, top_chains(want, None))
    for top in (1, 5, 37, 200):
        check_rows(api.recurring_paths(random_db, n_edges, min_support, top=top), want, top_chains(want, top))


FILTERS = [
    ({"signs": "+-"}, {"signs": [1, -1]}, {}),
    ({"signs": "*+"}, {"signs": [0, 1]}, {}),
    ({"min_layer": 1}, {"min_layer": 1}, {}),
    ({"max_layer": 3}, {"max_layer": 3}, {}),
    ({"min_layer": 1, "max_layer": 3}, {"min_layer": 1, "max_layer": 3}, {}),
    ({"tag": "b"}, {"tag": "b"}, {}),
    ({"min_weight": 0.3}, {}, {"min_weight": 0.3}),
    ({"min_rel_weight": 0.4}, {}, {"min_rel": 0.4}),
    ({"min_rel_weight": 0.2, "tag": "a", "signs": "++"}, {"tag": "a", "signs": [1, 1]}, {"min_rel": 0.2}),
]


@pytest.mark.parametrize("kwargs,where,strength", FILTERS, ids=lambda x: str(x))
def test_top_k_with_filters_equals_brute_force(random_db, kwargs, where, strength):
    want = expected_chains(RANDOM, 2, 2, relative_strong(RANDOM, **strength), **where)
    assert want
    for top in (3, 25, None):
        check_rows(api.recurring_paths(random_db, 2, 2, top=top, **kwargs), want, top_chains(want, top))


def test_rank_by_strength(random_db):
    want = expected_chains(RANDOM, 3, 2, relative_strong(RANDOM, min_rel=0.2))
    frame = api.recurring_paths(random_db, 3, 2, top=15, rank_by="strength", min_rel_weight=0.2)
    order = top_chains(want, 15, "strength")
    strengths = sorted((want[c]["strength"] for c in want), reverse=True)
    assert frame.height == 15 and frame["strength"].is_sorted(descending=True)
    # float32 sums in a different order may swap near-equal strengths: compare values, then chains
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(frame["strength"].to_list(), strengths[:15], strict=True))
    if all(strengths[i] - strengths[i + 1] > 1e-6 for i in range(15)):
        check_rows(frame, want, order)


def test_bad_top_and_rank(random_db):
    with pytest.raises(InputError, match="top must be >= 1"):
        api.recurring_paths(random_db, top=0)
    with pytest.raises(InputError, match="rank_by must be one of support, strength"):
        api.recurring_paths(random_db, rank_by="weight")
    with pytest.raises(Exception, match="rank_by must be 'support' or 'strength'"):
        random_db.fetchall("SELECT * FROM recurring_paths(rank_by := 'x')")


def test_path_prompts_over_skipping_steps_equal_brute_force(random_db):
    chains = expected_chains(RANDOM, 3, 2)
    skipping = [c for c in chains if any(b - a > 1 for a, b in itertools.pairwise(c[0]))]
    assert skipping
    for layers, feats, signs in skipping[:5] + list(chains)[:5]:
        path = [f"{la}.{f}" for la, f in zip(layers, feats, strict=True)]
        for tag, min_weight in ((None, 0.0), ("c", 0.0), (None, 0.3)):
            prompts = set()
            for p, (ptag, edges) in RANDOM.items():
                by_key = {e[:4]: e[4] for e in edges}
                ws = [by_key.get((layers[i], feats[i], layers[i + 1], feats[i + 1])) for i in range(3)]
                if (tag is None or ptag == tag) and all(w is not None and abs(w) >= min_weight for w in ws) and [
                    sign(w) for w in ws
                ] == list(signs):
                    prompts.add(p)
            frame = api.path_prompts(random_db, path, signs=list(signs), tag=tag, min_weight=min_weight)
            assert set(frame["prompt_id"].to_list()) == prompts


def expected_specific(tag: str, n_edges: int, min_support: int, strong) -> list[tuple]:
    """(path, signs, support, specificity) of every chain reaching min_support in ``tag``, most specific first."""
    sizes = {t: sum(1 for g, _ in RANDOM.values() if g == t) for t in "abc"}
    inside = expected_chains(RANDOM, n_edges, min_support, strong, tag=tag)
    per_tag = {t: expected_chains(RANDOM, n_edges, 1, strong, tag=t) for t in "abc"}
    rows = []
    for chain in inside:
        share = {t: per_tag[t].get(chain, {"support": 0})["support"] / sizes[t] for t in "abc"}
        spec = share[tag] - max(share[t] for t in "abc" if t != tag)
        path = " -> ".join(f"{la}.{f}" for la, f in zip(chain[0], chain[1], strict=True))
        rows.append((path, list(chain[2]), inside[chain]["support"], spec))
    return sorted(rows, key=lambda r: (-r[3], -r[2], r[0], r[1]))


@pytest.mark.parametrize("n_edges,min_support,min_rel", [(2, 2, 0.0), (3, 2, 0.2), (3, 3, 0.0)])
def test_tag_specific_top_k_equals_brute_force(random_db, n_edges, min_support, min_rel):
    want = expected_specific("b", n_edges, min_support, relative_strong(RANDOM, min_rel=min_rel))
    assert want
    for top in (1, 4, 30, None):
        frame = api.tag_specific_paths(random_db, "b", n_edges, min_support, min_rel_weight=min_rel, top=top)
        got = [(r["path"], r["signs"], r["support"], r["specificity"]) for r in frame.iter_rows(named=True)]
        cut = want if top is None else want[:top]
        assert [g[:3] for g in got] == [w[:3] for w in cut]
        assert all(math.isclose(g[3], w[3], abs_tol=1e-9) for g, w in zip(got, cut, strict=True))
