"""Strength-aware path ranking (migration 0010): recurring_paths' min_rel_weight / max_p filters and
support_any, tag_specific_paths, and the backfill of an older database, against brute force.

The graph is random but fixed (seeded): layers 0..3, four features per layer, edges between
consecutive layers and some that skip a layer (since migration 0011 these are steps of chains too). A noise experiment gives most upstream features a null
distribution; one feature has none and one never fired in the noise (no p-value either way).
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
from brute_paths import chain_weights
from helpers import database_before, insert_run
from query_graphs import new_run, write_graph

import featuregraph.query.api as api
from featuregraph.errors import InputError, NotFoundError
from featuregraph.store.db import open_database
from featuregraph.store.migrate import available_migrations
from featuregraph.store.optimize import optimize

TAGS = ("a", "b", "c")
N_PROMPTS = 24
LAYERS = 4
FEATURES = 4


def random_graph(seed: int = 7) -> dict[int, tuple[str, list[tuple]]]:
    rng = np.random.default_rng(seed)
    graph = {}
    for p in range(N_PROMPTS):
        tag = TAGS[p % 3]
        edges = []
        for ul, uf, dl, df in itertools.product(range(LAYERS), range(FEATURES), range(LAYERS), range(FEATURES)):
            if dl not in (ul + 1, ul + 2):
                continue
            # tag a favours feature 0 -> 0 -> 0 chains; everything else is random
            keep = 0.9 if (tag == "a" and uf == 0 and df == 0) else 0.45
            if rng.random() < keep:
                w = float(np.float32(rng.choice([-1, 1]) * rng.uniform(0.01, 1.0)))
                edges.append((ul, uf, dl, df, w))
        graph[p] = (tag, edges)
    return graph


GRAPH = random_graph()
NULL_FEATURE_MISSING = (1, 3)  # not baselined: no noise_features row
NULL_FEATURE_SILENT = (2, 2)  # never active in the noise contexts


def noise_samples(seed: int) -> dict[tuple[int, int], np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for layer, feature in itertools.product(range(LAYERS), range(FEATURES)):
        if (layer, feature) != NULL_FEATURE_MISSING:
            out[(layer, feature)] = np.sort(rng.uniform(0.0, 0.8, size=19).astype(np.float32))
    return out


NOISE = {1: noise_samples(1), 2: noise_samples(2)}  # experiment id -> samples; 2 is the latest


def add_noise_experiments(db, run_id: int) -> None:
    """Two complete noise experiments with null samples, written the way migration 0008 lays them out."""
    for exp, samples in NOISE.items():
        db.execute(
            "INSERT INTO experiments (experiment_id, run_id, kind, status, spec, device, featuregraph_version, "
            "torch_version, started_at) VALUES (?, ?, 'noise', 'complete', '{}', 'cpu', 't', 't', now())",
            [exp, run_id],
        )
        for (layer, feature), values in samples.items():
            silent = (layer, feature) == NULL_FEATURE_SILENT  # never fired, not injected: no null at all
            db.execute(
                "INSERT INTO noise_features (run_id, experiment_id, layer, feature, n_contexts, n_active, n_samples) "
                "VALUES (?, ?, ?, ?, 20, ?, ?)",
                [run_id, exp, layer, feature, 0 if silent else 5, 0 if silent else len(values)],
            )
            if silent:
                continue
            for v in values:
                n_ge = int((values >= v).sum())
                db.execute("INSERT INTO noise_null VALUES (?, ?, ?, ?, 'edge', ?, ?)",
                           [run_id, exp, layer, feature, float(v), n_ge])  # fmt: skip
    # a logit null must not be read for edges
    db.execute("INSERT INTO noise_null VALUES (?, 2, 0, 0, 'logit', 100.0, 1)", [run_id])


@pytest.fixture(scope="module")
def strength_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("strength") / "strength.duckdb"
    with open_database(path) as db:
        run = new_run(db, layers=range(LAYERS))
        write_graph(db, run, GRAPH, group=5)  # several transactions: edges move into edge_occurrences
        add_noise_experiments(db, run)
    with open_database(path, read_only=True) as db:
        yield db


# -- brute force ---------------------------------------------------------------------------


def p_value(exp: int, layer: int, feature: int, weight: float) -> float | None:
    samples = NOISE[exp].get((layer, feature))
    if samples is None or (layer, feature) == NULL_FEATURE_SILENT:
        return None
    return (1 + int((samples >= np.float32(abs(weight))).sum())) / (1 + len(samples))


def strong(prompt: int, edge: tuple, min_weight=0.0, min_rel=0.0, max_p=None, exp=2) -> bool:
    ul, uf, _, _, w = edge
    biggest = max(abs(e[4]) for e in GRAPH[prompt][1] if (e[0], e[1]) == (ul, uf))
    if abs(w) < min_weight or (min_rel > 0 and abs(w) < min_rel * biggest):
        return False
    if max_p is not None:
        p = p_value(exp, ul, uf, w)
        return p is not None and p < max_p
    return True


def chain_prompts(n_edges: int, tag=None, **filters) -> dict[tuple, set[int]]:
    """(layers, features, signs) -> prompts where every edge of the chain passes ``filters``
    (steps may skip a layer)."""
    found = defaultdict(set)
    for chain, prompts in chain_weights(GRAPH, n_edges, tag).items():
        kept = {p for p, steps in prompts.items() if all(strong(p, e, **filters) for _, e in steps)}
        if kept:
            found[chain] = kept
    return found


def expected_paths(n_edges: int, min_support: int, tag=None, **filters) -> dict[tuple, tuple[int, int]]:
    """Chain -> (support, support_any) for chains with support >= min_support."""
    kept = chain_prompts(n_edges, tag, **filters)
    every = chain_prompts(n_edges, tag)
    return {c: (len(ps), len(every[c])) for c, ps in kept.items() if len(ps) >= min_support}


def got_paths(frame) -> dict[tuple, tuple[int, int]]:
    return {
        (tuple(r["layers"]), tuple(r["features"]), tuple(r["signs"])): (r["support"], r["support_any"])
        for r in frame.iter_rows(named=True)
    }


# -- recurring_paths -----------------------------------------------------------------------


FILTERS = [
    {},
    {"min_rel_weight": 0.3},
    {"min_rel_weight": 0.6},
    {"min_weight": 0.2, "min_rel_weight": 0.3},
    {"max_p": 0.3},
    {"max_p": 0.15, "min_rel_weight": 0.2},
    {"max_p": 0.3, "experiment": 1},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "none")
@pytest.mark.parametrize("n_edges,min_support", [(2, 2), (2, 4), (3, 2)])
def test_recurring_paths_with_strength_filters_match_brute_force(strength_db, filters, n_edges, min_support):
    brute = {k: v for k, v in filters.items() if k != "experiment"}
    brute = {("min_rel" if k == "min_rel_weight" else k): v for k, v in brute.items()}
    want = expected_paths(n_edges, min_support, exp=filters.get("experiment", 2), **brute)
    frame = api.recurring_paths(strength_db, n_edges=n_edges, min_support=min_support, **filters)
    assert got_paths(frame) == want
    assert len(want) > 0 or filters.get("max_p")  # the cases are not vacuous (a strict p may leave none)
    assert frame["support"].is_sorted(descending=True)


def test_filters_change_the_answer_and_support_any_is_the_unfiltered_support(strength_db):
    plain = got_paths(api.recurring_paths(strength_db, n_edges=2, min_support=2))
    assert all(s == a for s, a in plain.values())
    strict = got_paths(api.recurring_paths(strength_db, n_edges=2, min_support=2, min_rel_weight=0.5))
    assert strict and strict != plain
    for chain, (support, support_any) in strict.items():
        assert support_any == plain[chain][0] and support <= support_any
    assert any(s < a for s, a in strict.values())
    p_filtered = got_paths(api.recurring_paths(strength_db, n_edges=2, min_support=2, max_p=0.2))
    assert p_filtered != plain
    # no path through the features without a null survives a p-value filter
    for layers, feats, _ in p_filtered:
        ups = {(layers[i], feats[i]) for i in range(len(feats) - 1)}
        assert not ups & {NULL_FEATURE_MISSING, NULL_FEATURE_SILENT}


def test_recurring_paths_with_a_tag_and_after_optimize(strength_db, tmp_path):
    want = expected_paths(2, 2, tag="b", min_rel=0.3)
    assert got_paths(api.recurring_paths(strength_db, 2, 2, tag="b", min_rel_weight=0.3)) == want
    path = tmp_path / "copy.duckdb"
    with open_database(path) as db:
        run = new_run(db, layers=range(LAYERS))
        write_graph(db, run, GRAPH, group=N_PROMPTS)
        optimize(db)  # rebuilt, sorted summary tables
        assert got_paths(api.recurring_paths(db, 2, 2, tag="b", min_rel_weight=0.3)) == want


def test_the_stored_ablation_maxima(strength_db):
    biggest = {(p, e[0], e[1]): max(abs(x[4]) for x in edges if x[:2] == e[:2])
               for p, (_, edges) in GRAPH.items() for e in edges}  # fmt: skip
    rows = strength_db.fetchall("SELECT prompt_id, up_layer, up_feature, ablation_max_abs FROM edge_occurrences")
    assert rows and all(math.isclose(m, biggest[(p, ul, uf)], rel_tol=1e-6) for p, ul, uf, m in rows)
    rows = strength_db.fetchall(
        "SELECT first_prompt_id, up_layer, up_feature, first_ablation_max_abs FROM edge_summary"
    )
    assert all(math.isclose(m, biggest[(p, ul, uf)], rel_tol=1e-6) for p, ul, uf, m in rows)


def test_bad_strength_parameters(strength_db):
    for kwargs, error, message in [
        ({"min_rel_weight": 1.5}, InputError, "min_rel_weight must be between 0 and 1"),
        ({"max_p": 0}, InputError, "max_p must be in (0, 1]"),
        ({"experiment": 1}, InputError, "only applies with max_p"),
        ({"max_p": 0.1, "experiment": 9}, NotFoundError, "no complete noise experiment 9"),
    ]:
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
            api.recurring_paths(strength_db, **kwargs)
    with pytest.raises(NotFoundError, match="no prompt tagged 'zzz'"):
        api.tag_specific_paths(strength_db, "zzz")


# -- tag_specific_paths --------------------------------------------------------------------


def expected_specific(tag: str, n_edges: int, min_support: int, **filters) -> dict[tuple, tuple]:
    sizes = {t: sum(1 for g, _ in GRAPH.values() if g == t) for t in TAGS}
    inside = chain_prompts(n_edges, tag, **filters)
    every = chain_prompts(n_edges, None, **filters)
    out = {}
    for chain, prompts in inside.items():
        if len(prompts) < min_support:
            continue
        per_tag = {t: sum(1 for p in every[chain] if GRAPH[p][0] == t) for t in TAGS}
        share = per_tag[tag] / sizes[tag]
        others = sorted(((per_tag[t] / sizes[t], t) for t in TAGS if t != tag and per_tag[t]),
                        key=lambda x: (-x[0], x[1]))  # fmt: skip
        other_share, other_tag = others[0] if others else (0.0, None)
        out[chain] = (per_tag[tag], share, other_tag, other_share, share - other_share,
                      [(t, per_tag[t], sizes[t]) for t in TAGS])  # fmt: skip
    return out


@pytest.mark.parametrize("tag,filters", [("a", {}), ("b", {"min_rel_weight": 0.3}), ("a", {"max_p": 0.6})])
def test_tag_specific_paths_match_brute_force(strength_db, tag, filters):
    brute = {("min_rel" if k == "min_rel_weight" else k): v for k, v in filters.items()}
    want = expected_specific(tag, 2, 2, **brute)
    frame = api.tag_specific_paths(strength_db, tag, n_edges=2, min_support=2, top=None, **filters)
    got = {}
    for r in frame.iter_rows(named=True):
        got[(tuple(r["layers"]), tuple(r["features"]), tuple(r["signs"]))] = (
            r["support"], r["share"], r["other_tag"], r["other_share"], r["specificity"],
            [(s["tag"], s["support"], s["n_prompts"]) for s in r["tag_supports"]],
        )  # fmt: skip
    assert set(got) == set(want) and want
    for chain, row in got.items():
        w = want[chain]
        assert row[0] == w[0] and row[2] == w[2] and row[5] == w[5], chain
        assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip((row[1], row[3], row[4]), (w[1], w[3], w[4]), strict=True))
    assert frame["specificity"].is_sorted(descending=True)
    # its support in the tag is recurring_paths' support there
    inside = got_paths(api.recurring_paths(strength_db, 2, 2, tag=tag, **filters))
    assert {c: s for c, (s, _) in inside.items()} == {c: w[0] for c, w in want.items()}
    top = api.tag_specific_paths(strength_db, tag, n_edges=2, min_support=2, top=3, **filters)
    assert top.height == min(3, len(want)) and top["path"].to_list() == frame["path"].to_list()[:3]


def test_the_planted_chains_are_the_most_specific_to_their_tag(strength_db):
    # tag a has 0 -> 0 -> 0 edges in 90% of its prompts, the other tags in 45%
    frame = api.tag_specific_paths(strength_db, "a", n_edges=2, min_support=2, top=5)
    assert frame.height == 5
    assert all(set(f) == {0} for f in frame["features"].to_list()[:1])
    assert frame["specificity"][0] > 0


# -- migration 0010 on an older database ---------------------------------------------------


def test_migration_0010_backfills_an_older_database(tmp_path):
    path = tmp_path / "old.duckdb"
    con = database_before(path, 10)
    insert_run(con, "old", "complete")
    for prompt, (tag, edges) in GRAPH.items():
        con.execute("INSERT INTO prompts (run_id, prompt_id, text, text_sha256, tag, n_tokens, n_ablations, "
                    "ingested_at) VALUES (1, ?, ?, 'h', ?, 2, 1, now())", [prompt, f"p{prompt}", tag])
        for e in edges:
            con.execute("INSERT INTO edges VALUES (1, ?, ?, ?, ?, ?, ?)", [prompt, *e])
    # the derived tables as an older featuregraph kept them (migration 0002's statements)
    step2 = next(m for m in available_migrations() if m.version == 2).sql
    con.execute("DELETE FROM edge_summary")
    con.execute(step2[step2.index("INSERT INTO edge_summary"):])
    columns = {r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'edge_occurrences'").fetchall()}
    assert "ablation_max_abs" not in columns
    con.close()
    with open_database(path) as db:  # applies 0010
        assert db.fetchone("SELECT count(*) FROM edge_occurrences WHERE ablation_max_abs IS NULL")[0] == 0
        assert db.fetchone("SELECT count(*) FROM edge_summary WHERE first_ablation_max_abs IS NULL")[0] == 0
        test_the_stored_ablation_maxima(db)
        assert got_paths(api.recurring_paths(db, 2, 2, min_rel_weight=0.4)) == expected_paths(2, 2, min_rel=0.4)
        assert db.fetchall("SELECT * FROM recurring_paths(max_p := 0.5)") == []  # no noise experiment: no p


# -- the CLI's defaults --------------------------------------------------------------------


def test_the_cli_ranks_by_relative_weight_by_default(strength_db):
    import json

    from typer.testing import CliRunner

    from featuregraph.cli import app

    def cli(*args) -> list[dict]:
        result = CliRunner().invoke(app, ["query", *map(str, args), "-f", "json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    rows = cli("recurring", strength_db.path, "--edges", "2", "--top", "1000")
    default = got_paths(api.recurring_paths(strength_db, 2, 2, min_rel_weight=api.RECOMMENDED_MIN_REL_WEIGHT))
    assert default != got_paths(api.recurring_paths(strength_db, 2, 2))  # the default filter matters here
    assert {(tuple(r["layers"]), tuple(r["features"]), tuple(r["signs"])): (r["support"], r["support_any"])
            for r in rows} == default  # fmt: skip
    rows = cli("tag-specific", strength_db.path, "b", "--min-rel-weight", "0.3", "--max-p", "0.6", "--top", "5")
    want = api.tag_specific_paths(strength_db, "b", min_rel_weight=0.3, max_p=0.6, top=5)
    assert [(r["path"], r["specificity"]) for r in rows] == list(zip(want["path"], want["specificity"], strict=True))
    assert rows
