"""Feature names across sites on a hand-built mixed run (tests/mixed_sites.py): paths through
attention and MLP features, the feature helpers by name, Neuronpedia links, graph files, the
dashboard. Expected answers come from the hand-written graph, never from the code under test."""

from __future__ import annotations

import json
from collections import Counter
from itertools import product

import pytest
from graph_files import cantor, write
from mixed_sites import ATT5, ATT_PEAKS, LIMIT, MIXED_GRAPH, MLP5, RES5, mixed_database
from test_dashboard_support import app_test

from featuregraph.errors import InputError, NotFoundError
from featuregraph.query import api
from featuregraph.query.features import feature_sae, neuronpedia_url
from featuregraph.query.graph_cli import export_graph
from featuregraph.store.db import open_database
from featuregraph.store.graph_import import import_graphs

# The names of the four features, written by hand.
NAMES = {(0, RES5): "0.5", (0, ATT5): "0.att.5", (0, MLP5): "0.mlp.5", (1, RES5): "1.5"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return mixed_database(tmp_path_factory.mktemp("mixed") / "mixed.duckdb")


def _brute_chains(n_edges: int) -> Counter:
    """(path name, signs) -> prompts holding the chain, by enumerating every chain of each prompt."""
    found: Counter = Counter()
    for _, edges in MIXED_GRAPH.values():
        chains = set()
        for steps in product(edges, repeat=n_edges):
            if all((a[2], a[3]) == (b[0], b[1]) for a, b in zip(steps, steps[1:], strict=False)):
                nodes = [NAMES[(steps[0][0], steps[0][1])]] + [NAMES[(s[2], s[3])] for s in steps]
                chains.add((" -> ".join(nodes), tuple(-1 if s[4] < 0 else 1 for s in steps)))
        found.update(chains)
    return found


@pytest.mark.parametrize("top", [None, 5])
def test_recurring_paths_run_through_attention_and_mlp_features(mixed, top):
    with open_database(mixed, read_only=True) as db:
        got = api.recurring_paths(db, n_edges=2, min_support=2, top=top)
    want = {k: n for k, n in _brute_chains(2).items() if n >= 2}
    assert want == {("0.5 -> 0.att.5 -> 1.5", (1, -1)): 3}  # the hand graph, read on paper
    assert {(r["path"], tuple(r["signs"])): r["support"] for r in got.iter_rows(named=True)} == want
    row = got.row(0, named=True)
    assert row["nodes"] == ["0.5", "0.att.5", "1.5"] and row["layers"] == [0, 0, 1]
    assert row["features"] == [5, LIMIT + 5, 5]


def test_path_prompts_and_prompt_graph_by_site_names(mixed):
    with open_database(mixed, read_only=True) as db:
        through_att = api.path_prompts(db, "0.5 -> 0.att.5 -> 1.5")
        assert sorted(through_att["prompt_id"].to_list()) == [0, 1, 2]
        assert api.path_prompts(db, ["0.att.5", "0.mlp.5", "1.5"])["prompt_id"].to_list() == [2]
        assert api.path_prompts(db, ["0.res.5", "0.mlp.5", "1.5"])["prompt_id"].to_list() == [0]
        # residual 0.5 -> 1.5 directly is no edge, and the residual 0.5 is not 0.att.5
        assert api.path_prompts(db, ["0.5", "1.5"]).height == 0
        assert api.path_prompts(db, ["0.5", "0.5", "1.5"]).height == 0
        graph = api.prompt_graph(db, 2, k=10, min_path=3)
        assert sorted(graph.select("up", "down").rows()) == [
            ("0.5", "0.att.5"), ("0.att.5", "0.mlp.5"), ("0.mlp.5", "1.5")
        ]  # fmt: skip
        # the same lookups in plain SQL
        assert db.fetchall("SELECT up, down, n FROM edge_stats WHERE up = '0.att.5' ORDER BY down") == [
            ("0.att.5", "0.mlp.5", 1), ("0.att.5", "1.5", 3)
        ]  # fmt: skip


def test_the_feature_helpers_find_an_attention_feature_by_name_and_never_mix_sites(mixed):
    with open_database(mixed, read_only=True) as db:
        att = api.feature_edges(db, "0.att.5")
        assert sorted((r["direction"], r["neighbour"], r["n"]) for r in att.iter_rows(named=True)) == [
            ("in", "0.5", 3), ("out", "0.mlp.5", 1), ("out", "1.5", 3)
        ]  # fmt: skip
        res = api.feature_edges(db, "0.5")
        assert sorted((r["direction"], r["neighbour"], r["n"]) for r in res.iter_rows(named=True)) == [
            ("out", "0.att.5", 3), ("out", "0.mlp.5", 2)
        ]  # fmt: skip
        assert api.feature_edges(db, "0.res.5").equals(res)
        # activations: the attention feature peaks in prompt 2, the residual one is 1.0 everywhere
        ctx = api.top_contexts(db, "0.att.5", top=3)
        assert ctx.select("prompt_id", "max_activation").rows() == sorted(
            ((p, a) for p, a in ATT_PEAKS.items()), key=lambda x: -x[1]
        )
        assert set(api.top_contexts(db, "0.5", top=3)["max_activation"].to_list()) == {1.0}
        assert api.feature_logits(db, "0.att.5").select("token_id", "mean_dprob").rows() == [
            (2, pytest.approx(-0.2))
        ]
        assert api.feature_logits(db, "0.5").select("token_id", "mean_dprob").rows() == [
            (1, pytest.approx(0.1))
        ]
        assert api.top_contexts(db, "0.mlp.5").height == 0  # no activations stored for it
        sae = feature_sae(db, "0.att.5")
        assert sae.select("site_kind", "hook_name", "neuronpedia_id").rows() == [
            ("attn_z", "blocks.0.attn.hook_z", "gpt2-small/0-att-kk")
        ]
        assert feature_sae(db, "0.5")["hook_name"].to_list() == ["blocks.0.hook_resid_pre"]


def test_unknown_sites_and_indices_are_one_line(mixed):
    with open_database(mixed, read_only=True) as db:
        for name, kind, says in [
            ("1.att.5", NotFoundError, "no attn_z SAE at layer 1 for feature 1.att.5 (layers: 0, 0.att, 0.mlp, 1)"),
            ("0.att.10", NotFoundError, "feature 0.att.10 is out of range: layer 0.att has 10 features"),
            ("0.tc.1", NotFoundError, "no transcoder SAE at layer 0"),
            ("0.attn.5", InputError, "LAYER.SITE.FEATURE"),
        ]:  # fmt: skip
            with pytest.raises(kind) as err:
                api.feature_edges(db, name)
            assert says in str(err.value) and "\n" not in str(err.value)


def test_neuronpedia_links_use_the_index_and_the_stored_id():
    assert neuronpedia_url("gpt2-small/0-att-kk", ATT5) == "https://neuronpedia.org/gpt2-small/0-att-kk/5"
    assert (
        neuronpedia_url("gpt2-small/5-res-jb", 10603) == "https://neuronpedia.org/gpt2-small/5-res-jb/10603"
    )
    assert neuronpedia_url("m/3-tc", 3 * LIMIT + 7) == "https://neuronpedia.org/m/3-tc/7"
    assert neuronpedia_url(None, ATT5) is None


def test_graph_edges_name_the_site_of_both_ends(mixed):
    with open_database(mixed, read_only=True) as db:
        got = db.fetchall("SELECT up_site, down_site, count(*) FROM graph_edges GROUP BY ALL ORDER BY ALL")
    want = Counter(
        (("resid", "attn_z", "mlp_out")[u // LIMIT], ("resid", "attn_z", "mlp_out")[d // LIMIT])
        for _, edges in MIXED_GRAPH.values() for _, u, _, d, _ in edges
    )  # fmt: skip
    assert got == sorted((u, d, n) for (u, d), n in want.items())


def test_export_and_import_of_a_mixed_graph(mixed, tmp_path):
    doc = json.loads(export_graph(mixed, 2).data)
    features = {n["node_id"]: n for n in doc["nodes"] if n["feature_type"] != "logit"}
    assert set(features) == {"0_5_1", "0_att_5_1", "0_mlp_5_1", "1_5_1"}
    att = features["0_att_5_1"]
    assert (att["feature"], att["layer"], att["clerp"], att["feature_type"]) == (
        cantor(0, 5),
        "0",
        "0.att.5",
        "attention sae",
    )
    assert features["0_mlp_5_1"]["feature_type"] == "mlp sae" and features["0_mlp_5_1"]["clerp"] == "0.mlp.5"
    assert (
        features["0_5_1"]["feature_type"] == "cross layer transcoder" and features["0_5_1"]["clerp"] == "0.5"
    )
    weights = {(x["source"], x["target"]): x["weight"] for x in doc["links"]}
    assert weights[("0_att_5_1", "0_mlp_5_1")] == pytest.approx(-0.75)
    # mixed sources: no single Neuronpedia source set to fetch every feature from
    assert "feature_details" not in doc["metadata"]

    db = tmp_path / "imported.duckdb"
    summary = import_graphs(db, [write(tmp_path / "mixed.json", json.dumps(doc))])
    assert (summary.n_imported, summary.bad) == (1, [])
    with open_database(db, read_only=True) as con:
        edges = con.fetchall(
            "SELECT up_layer, up_feature, down_layer, down_feature, weight FROM edges ORDER BY ALL"
        )
        assert [(*e[:4], round(e[4], 6)) for e in edges] == sorted(MIXED_GRAPH[2][1])
        assert api.path_prompts(con, "0.5 -> 0.att.5 -> 0.mlp.5 -> 1.5")["prompt_id"].to_list() == [0]
        assert con.fetchall("SELECT DISTINCT up_site FROM graph_edges WHERE up_kind = 'feature' ORDER BY 1") == [
            ("attn_z",), ("mlp_out",), ("resid",)
        ]  # fmt: skip
    again = json.loads(export_graph(db, 0).data)
    assert again == doc


def test_import_maps_feature_types_to_sites(tmp_path):
    nodes = [
        {"node_id": "a", "feature": 3, "layer": "2", "ctx_idx": 0, "feature_type": "lorsa", "jsNodeId": "a", "clerp": ""},
        {"node_id": "b", "feature": 4, "layer": "2", "ctx_idx": 0, "feature_type": "mlp sae", "jsNodeId": "b", "clerp": ""},
        {"node_id": "c", "feature": 5, "layer": "3", "ctx_idx": 0, "feature_type": "per layer transcoder",
         "jsNodeId": "c", "clerp": ""},
        {"node_id": "d", "feature": 6, "layer": "4", "ctx_idx": 0, "feature_type": "sae", "jsNodeId": "d", "clerp": ""},
    ]  # fmt: skip
    doc = {"metadata": {"slug": "s", "scan": "m", "prompt_tokens": ["x"], "prompt": "x"}, "qParams": {},
           "nodes": nodes, "links": [{"source": "a", "target": "b", "weight": 1.0},
                                     {"source": "b", "target": "c", "weight": 1.0},
                                     {"source": "c", "target": "d", "weight": 1.0}]}  # fmt: skip
    db = tmp_path / "t.duckdb"
    import_graphs(db, [write(tmp_path / "t.json", json.dumps(doc))])
    with open_database(db, read_only=True) as con:
        assert con.fetchall("SELECT fg_node(layer, feature) FROM graph_nodes ORDER BY node_index") == [
            ("2.att.3",), ("2.mlp.4",), ("3.tc.5",), ("4.6",)
        ]  # fmt: skip
        assert con.fetchall("SELECT feature FROM graph_nodes ORDER BY node_index") == [
            (LIMIT + 3,), (2 * LIMIT + 4,), (3 * LIMIT + 5,), (6,)
        ]  # fmt: skip


def test_the_dashboard_draws_and_pages_a_mixed_graph(mixed, monkeypatch):
    at = app_test(monkeypatch, mixed, "graph", prompt=2, run=1).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    dot = at.get("graphviz_chart")[0].proto.spec
    for node_id, name in [("n0_5", "0.5"), ("n0_att_5", "0.att.5"), ("n0_mlp_5", "0.mlp.5"), ("n1_5", "1.5")]:
        assert f"  {node_id} [label=<" in dot and f"<B>{name}</B>" in dot, (node_id, dot)
    # res 0, att 0, mlp 0 and res 1 each get their own rank, in forward order
    ranks = [line.split()[1] for line in dot.splitlines() if line.strip().startswith("subgraph")]
    assert ranks == ["layer_0", "layer_0_1", "layer_0_2", "layer_1"]
    assert "  n0_att_5 -> n0_mlp_5 " in dot

    at = app_test(monkeypatch, mixed, "feature", feature="0.att.5", run=1).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    texts = "\n".join(str(e.value) for e in [*at.subheader, *at.caption])
    assert "Feature 0.att.5" in texts and "blocks.0.attn.hook_z" in texts
    assert at.get("link_button")[0].proto.url == "https://neuronpedia.org/gpt2-small/0-att-kk/5"
    neighbours = {n for d in at.dataframe if "neighbour" in d.value.columns for n in d.value["neighbour"]}
    assert neighbours == {"0.5", "1.5", "0.mlp.5"}

    at = app_test(monkeypatch, mixed, "feature", feature="0.5", run=1).run()
    assert at.get("link_button")[0].proto.url == "https://neuronpedia.org/gpt2-small/0-res-jb/5"
    at = app_test(monkeypatch, mixed, "feature", feature="0.mlp.5", run=1).run()
    assert not at.exception and not at.get("link_button")  # its SAE has no Neuronpedia id


def test_the_dashboard_paths_page_follows_a_path_through_an_attention_feature(mixed, monkeypatch):
    at = app_test(monkeypatch, mixed, "paths", run=1, n_edges=2, min_rel_weight=0).run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    table = at.dataframe[0].value
    assert list(table["path"]) == ["0.5 -> 0.att.5 -> 1.5"] and list(table["support"]) == [3]
    prompts = at.dataframe[1].value
    assert sorted(prompts["prompt_id"]) == [0, 1, 2]
    at.button(key="paths_open_graph").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params["path"] == "0.5 -> 0.att.5 -> 1.5"
    dot = at.get("graphviz_chart")[0].proto.spec
    framed = [
        line.split()[0] for line in dot.splitlines() if 'class="fg-path"' in line and "[label=<" in line
    ]
    assert sorted(framed) == ["n0_5", "n0_att_5", "n1_5"]


def test_longest_paths_go_through_sites_of_one_layer_in_forward_order():
    import polars as pl

    from featuregraph.query.prompts import longest_paths

    edges = MIXED_GRAPH[2][1]
    frame = pl.DataFrame(
        edges, schema=["up_layer", "up_feature", "down_layer", "down_feature", "weight"], orient="row"
    )
    # 0.5 -> 0.att.5 -> 0.mlp.5 -> 1.5 has 3 edges; 0.att.5 -> 1.5 lies on 0.5 -> 0.att.5 -> 1.5 only
    assert longest_paths(frame).to_list() == [3, 2, 3, 3]
