"""Graph files in and out: the model, Cantor ids, import of hand-built files, export, round trips."""

from __future__ import annotations

import json
import random

import duckdb
import pytest
from graph_files import CT_EDGES, CT_GRAPH, CT_NODES, NP_EDGES, NP_GRAPH, TC, cantor, variant, write
from helpers import insert_run, make_run
from query_graphs import HAND_GRAPH, prompt_result, sae_rows
from typer.testing import CliRunner

import featuregraph.query.api as api
from featuregraph.cli import app
from featuregraph.query.graph_cli import export_graph
from featuregraph.query.graph_prune import Pruning
from featuregraph.store import graph_model as gm
from featuregraph.store.db import open_database
from featuregraph.store.graph_import import import_graphs
from featuregraph.store.migrate import available_migrations
from featuregraph.store.runs import create_run, finish_run, write_prompt_results


def rows(path, sql, params=()):
    with open_database(path, read_only=True) as db:
        return db.fetchall(sql, list(params))


# -- Cantor ids ---------------------------------------------------------------------------


def test_cantor_ids_match_the_documented_formula_and_invert():
    # (L+i)(L+i+1)/2 + i, worked out: (0,0)->0, (1,0)->1, (0,1)->2, (2,0)->3, (1,1)->4, (0,2)->5
    assert [gm.cantor(L, i) for L, i in [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]] == [
        0,
        1,
        2,
        3,
        4,
        5,
    ]
    rng = random.Random(0)
    pairs = [(rng.randrange(0, 80), rng.randrange(0, 2**20)) for _ in range(2000)]
    pairs += [(0, 2**40), (2**31, 7), (5, 0), (0, 0)]  # far past float precision in the square root
    for layer, index in pairs:
        f = gm.cantor(layer, index)
        assert f == cantor(layer, index)
        assert gm.uncantor(f) == (layer, index)
    # every id below 5000 decodes to a pair that encodes back to it: the pairing is a bijection
    assert all(gm.cantor(*gm.uncantor(f)) == f for f in range(5000))
    with pytest.raises(ValueError):
        gm.cantor(-1, 3)


# -- the model ----------------------------------------------------------------------------


def test_the_model_reads_both_hand_files_and_writes_back_what_it_read():
    for doc in (CT_GRAPH, NP_GRAPH):
        graph = gm.GraphFile.model_validate(doc)
        assert graph.dump() == json.loads(json.dumps(doc))
    assert not gm.GraphFile.model_validate(CT_GRAPH).uses_cantor
    assert gm.GraphFile.model_validate(NP_GRAPH).uses_cantor


# -- import ---------------------------------------------------------------------------------


def test_a_circuit_tracer_file_imports_with_every_node_and_link(tmp_path):
    db = tmp_path / "g.duckdb"
    summary = import_graphs(db, [write(tmp_path / "ct.json", CT_GRAPH)])
    assert (summary.n_imported, summary.bad) == (1, [])
    ((run_id, method),) = summary.runs.items()
    assert method == "imported:circuit-tracer"
    got = rows(db, "SELECT kind, layer, feature, position, token_id FROM graph_nodes ORDER BY node_index")
    assert got == CT_NODES
    links = rows(db, "SELECT source_index, target_index, weight FROM graph_links ORDER BY ALL")
    index = {n["node_id"]: i for i, n in enumerate(CT_GRAPH["nodes"])}
    want = sorted((index[x["source"]], index[x["target"]], -x["weight"]) for x in CT_GRAPH["links"])
    assert links == want
    edges = rows(db, "SELECT up_layer, up_feature, down_layer, down_feature, weight FROM edges")
    assert [(*e[:4], round(e[4], 6)) for e in edges] == CT_EDGES
    # the general view resolves both ends, positions kept
    assert rows(db, "SELECT count(*) FROM graph_edges WHERE up_position IS NOT NULL")[0][0] == len(
        CT_GRAPH["links"]
    )
    assert rows(
        db,
        "SELECT up_kind, down_kind, up_token_id FROM graph_edges WHERE up_kind = 'embedding' "
        "ORDER BY up_token_id",
    ) == [("embedding", "feature", 464), ("embedding", "feature", 3290)]
    # clean logits: token_prob, else the clerp's (p=...)
    assert rows(db, "SELECT rank, token_id, round(prob::DOUBLE, 6) FROM top_next_tokens ORDER BY rank") == [
        (1, 262, 0.6),
        (2, 11, 0.1),
    ]
    assert rows(db, "SELECT token_id, token FROM tokens ORDER BY position") == [(464, "The"), (3290, " cat")]
    assert rows(db, "SELECT status, n_prompts, model FROM runs WHERE run_id = ?", [run_id]) == [
        ("complete", 1, "toy-2l")
    ]


def test_a_neuronpedia_file_with_cantor_ids_imports_decoded(tmp_path):
    db = tmp_path / "g.duckdb"
    import_graphs(db, [write(tmp_path / "np.json", NP_GRAPH)])
    got = rows(db, "SELECT node_id, kind, layer, feature, raw_feature FROM graph_nodes ORDER BY node_index")
    assert got == [
        ("E_15496_1", "embedding", None, None, None),
        ("0_cro_5_1", "feature", 0, TC + 5, cantor(0, 5)),
        ("featA", "feature", 4, TC + 30000, cantor(4, 30000)),
        ("2_error_mlp_2", "error", 2, None, None),
        ("13_995_2", "logit", 13, None, 995),
    ]
    edges = rows(db, "SELECT up_layer, up_feature, down_layer, down_feature, weight FROM edges")
    assert [(*e[:4], round(e[4], 6)) for e in edges] == NP_EDGES  # non-adjacent layers 0 -> 4
    assert rows(db, "SELECT method, node_threshold, edge_threshold, schema_version FROM graphs") == [
        ("imported:unknown", 0.8, 0.98, 1)
    ]


BAD = {
    "not json": ("{nope", "not JSON"),
    "a list": ("[1, 2]", "not a graph: the top level is not a JSON object"),
    "no links": (json.dumps({k: v for k, v in CT_GRAPH.items() if k != "links"}), "not a graph file: links: Field required"),
    "dangling link": (variant(CT_GRAPH, links=[{"source": "0_7_0", "target": "nowhere", "weight": 1.0}]),
                      "names no node 'nowhere'"),
    "past the prompt": (variant(CT_GRAPH, meta_prompt_tokens=["The"]), "ctx_idx 1 is past the 1 prompt tokens"),
    "wrong cantor": (variant(NP_GRAPH, nodes=[dict(NP_GRAPH["nodes"][1], feature=12345)], links=[]),
                     "is not the Cantor id of layer 0 index 5"),
    "huge id": (variant(CT_GRAPH, nodes=[dict(CT_GRAPH["nodes"][6], feature=2**40)], links=[]), "token id 1099511627776 is out of range"),
    "feature at E": (variant(CT_GRAPH, nodes=[dict(CT_GRAPH["nodes"][2], layer="E")], links=[]), "not a number"),
    "nan weight": ('{"metadata": {"slug": "s", "scan": "m", "prompt_tokens": ["a"], "prompt": "a"}, "qParams": {},'
                   ' "nodes": [], "links": [{"source": "x", "target": "y", "weight": NaN}]}', "finite"),
}  # fmt: skip


def test_bad_files_get_one_line_each_and_leave_nothing(tmp_path):
    db = tmp_path / "g.duckdb"
    good = write(tmp_path / "good.json", CT_GRAPH)
    bad = {name: write(tmp_path / f"bad{i}.json", doc) for i, (name, (doc, _)) in enumerate(BAD.items())}
    summary = import_graphs(db, [good, *bad.values(), tmp_path / "missing.json"])
    reasons = dict(summary.bad)
    for name, path in bad.items():
        reason = reasons[str(path.resolve())]
        assert BAD[name][1] in reason and "\n" not in reason, (name, reason)
    assert "no such file" in reasons[str(tmp_path / "missing.json")]
    assert summary.n_imported == 1
    assert rows(db, "SELECT count(*) FROM graphs")[0][0] == 1
    assert rows(db, "SELECT count(*) FROM graph_nodes")[0][0] == len(CT_GRAPH["nodes"])
    # the command prints them one line each
    result = CliRunner().invoke(
        app, ["import-graph", str(tmp_path / "g2.duckdb"), str(tmp_path), "--no-progress"]
    )
    assert result.exit_code == 0
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == len(BAD)


def test_duplicates_by_content_are_skipped_and_folders_and_globs_expand(tmp_path):
    db = tmp_path / "g.duckdb"
    folder = tmp_path / "graphs" / "sub"
    folder.mkdir(parents=True)
    write(folder / "a.json", CT_GRAPH)
    write(folder / "copy.json", CT_GRAPH)  # same bytes, other name
    write(folder / "b.json", variant(CT_GRAPH, meta_slug="other"))
    first = import_graphs(db, [tmp_path / "graphs"])
    assert (first.n_files, first.n_imported, first.n_duplicates) == (3, 2, 1)
    again = import_graphs(db, [str(tmp_path / "graphs" / "**" / "*.json")])
    assert (again.n_files, again.n_imported, again.n_duplicates) == (3, 0, 3)
    assert rows(db, "SELECT count(*), count(DISTINCT content_sha256) FROM graphs")[0] == (2, 2)
    assert rows(db, "SELECT prompt_id FROM prompts ORDER BY 1") == [(0,), (1,)]


def test_an_import_killed_mid_way_resumes_to_the_same_database(tmp_path, monkeypatch):
    import featuregraph.store.graph_import as gi

    files = [write(tmp_path / f"g{i:02d}.json", variant(CT_GRAPH, meta_slug=f"g{i}")) for i in range(9)]
    clean = tmp_path / "clean.duckdb"
    import_graphs(clean, files, batch_size=2)
    crashed = tmp_path / "crashed.duckdb"
    real = gi.insert_prompt_tables
    calls = []

    def dies_in_the_third_batch(db, run_id, tables):
        # the third batch's graph rows are inserted by now: its transaction must take them back
        calls.append(run_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(db, run_id, tables)

    monkeypatch.setattr(gi, "insert_prompt_tables", dies_in_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        import_graphs(crashed, files, batch_size=2)
    monkeypatch.setattr(gi, "insert_prompt_tables", real)
    assert rows(crashed, "SELECT count(*) FROM graphs")[0][0] == 4  # two whole batches, nothing of the third
    assert rows(crashed, "SELECT count(DISTINCT prompt_id) FROM graph_nodes")[0][0] == 4
    assert rows(crashed, "SELECT count(*) FROM prompts")[0][0] == 4
    resumed = import_graphs(crashed, files, batch_size=2)
    assert (resumed.n_imported, resumed.n_duplicates) == (5, 4)
    q = ("SELECT g.slug, n.node_id, n.kind, n.position FROM graphs g JOIN graph_nodes n USING (run_id, prompt_id) "
         "ORDER BY ALL")  # fmt: skip
    assert rows(crashed, q) == rows(clean, q)
    q = "SELECT p.text, e.up_feature, e.down_feature, e.weight FROM edges e JOIN prompts p USING (run_id, prompt_id) ORDER BY ALL"
    assert rows(crashed, q) == rows(clean, q)
    assert rows(crashed, "SELECT count(*), count(DISTINCT prompt_id) FROM prompts")[0] == (9, 9)


# -- export ---------------------------------------------------------------------------------


def np_database(path):
    """HAND_GRAPH with Neuronpedia ids on its SAEs, logits on prompt 0."""
    with open_database(path) as db:
        saes = [dict(s, neuronpedia_id=f"gpt2-small/{s['layer']}-res-jb") for s in sae_rows(range(4))]
        run = create_run(db, "np", make_run(), saes, [f"t{i}" for i in range(8)])
        logits = [(3, 4, 0, -0.5, -0.1), (2, 3, 0, 0.25, 0.05)]
        write_prompt_results(
            db, run, [prompt_result(0, HAND_GRAPH[0][1], "a", logits=logits, activations=[(0, 1, 1, 2.0)])]
        )
        finish_run(db, run, "complete")
    return path


def test_export_of_a_sweep_validates_with_cantor_ids_source_set_and_clean_logits(tmp_path):
    db = np_database(tmp_path / "np.duckdb")
    doc = json.loads(export_graph(db, 0).data)
    graph = gm.GraphFile.model_validate(doc)
    meta = doc["metadata"]
    assert (meta["scan"], meta["schema_version"], meta["feature_details"]) == (
        "gpt2-small",
        1,
        {"neuronpedia_source_set": "res-jb"},
    )
    features = {(n["layer"], n["feature"]) for n in doc["nodes"] if n["feature_type"] != "logit"}
    stored = {(u, f) for u, f, *_ in HAND_GRAPH[0][1]} | {(d, g) for _, _, d, g, _ in HAND_GRAPH[0][1]}
    assert features == {(str(L), cantor(L, i)) for L, i in stored}
    (logit,) = [n for n in doc["nodes"] if n["feature_type"] == "logit"]
    assert logit["token_prob"] == 0.5 and logit["clerp"] == 'Output "t0" (p=0.500)' and logit["feature"] == 0
    weights = {(x["source"], x["target"]): x["weight"] for x in doc["links"]}
    for u, f, d, g, w in HAND_GRAPH[0][1]:
        assert weights[(f"{u}_{f}_1", f"{d}_{g}_1")] == pytest.approx(-w)  # promotes = positive
    assert weights[("3_4_1", logit["node_id"])] == pytest.approx(0.5)  # -dlogp
    assert graph.uses_cantor


@pytest.mark.parametrize(
    "pruning", [Pruning(), Pruning(node_threshold=0.9, edge_threshold=0.95), Pruning(top_k=1)]
)
def test_export_import_export_is_identical(tmp_path, pruning):
    db = np_database(tmp_path / "np.duckdb")
    first = export_graph(db, 0, pruning=pruning).data
    import_graphs(db, [write(tmp_path / "a.json", first.decode())])
    again = export_graph(db, 0, run=2).data
    assert json.loads(again) == json.loads(first)


def test_export_keeps_under_the_size_cap_by_dropping_the_weakest_links(tmp_path):
    db = np_database(tmp_path / "np.duckdb")
    full = export_graph(db, 0)
    cap = len(full.data) - 250
    cut = export_graph(db, 0, max_bytes=cap)
    assert len(cut.data) <= cap < len(full.data) and cut.n_cut_for_size > 0
    kept = sorted(abs(x["weight"]) for x in json.loads(cut.data)["links"])
    every = sorted(abs(x["weight"]) for x in json.loads(full.data)["links"])
    assert kept == every[len(every) - len(kept) :]  # the strongest ones


def test_export_formats_and_errors_through_the_cli(tmp_path):
    db = np_database(tmp_path / "np.duckdb")
    runner = CliRunner()
    out = tmp_path / "g.graphml"
    result = runner.invoke(
        app, ["export-graph", str(db), "--prompt", "0", "--format", "graphml", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    import xml.etree.ElementTree as ET

    root = ET.parse(out).getroot()
    ns = "{http://graphml.graphdrawing.org/xmlns}"
    assert len(root.findall(f"{ns}graph/{ns}edge")) == len(json.loads(export_graph(db, 0).data)["links"])
    lines = runner.invoke(
        app, ["export-graph", str(db), "--prompt", "0", "-f", "json-lines"]
    ).stdout.splitlines()
    assert json.loads(lines[0])["type"] == "metadata" and {json.loads(x)["type"] for x in lines[1:]} == {
        "node",
        "link",
    }
    viewer = tmp_path / "viewer"
    viewer.mkdir()
    for _ in range(2):  # twice: the listing keeps one entry per slug
        assert (
            runner.invoke(app, ["export-graph", str(db), "--prompt", "0", "--out", str(viewer)]).exit_code
            == 0
        )
    listed = json.loads((viewer / "graph-metadata.json").read_text())["graphs"]
    assert [g["slug"] for g in listed] == ["featuregraph-run1-prompt0"]
    assert json.loads((viewer / "featuregraph-run1-prompt0.json").read_text())["metadata"] == listed[0]
    for args, message in [
        (["--prompt", "7"], "no run of"),
        (["--prompt", "0", "--node-threshold", "1.5"], "cumulative fraction"),
        (["--prompt", "0", "--top-k", "0"], "--top-k must be at least 1"),
        (["--prompt", "0", "-f", "dot"], "--format: one of"),
    ]:
        result = runner.invoke(app, ["export-graph", str(db), *args])
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1, (
            result.output
        )


def test_existing_queries_read_imported_graphs(tmp_path):
    db = tmp_path / "g.duckdb"
    import_graphs(db, [write(tmp_path / "ct.json", CT_GRAPH), write(tmp_path / "np.json", NP_GRAPH)])
    with open_database(db, read_only=True) as con:
        graph = api.prompt_graph(con, 0, run=1, k=5, min_path=1)
        assert graph.select("up", "down").rows() == [("0.tc.7", "1.tc.12")]  # circuit-tracer's transcoders
        # the Neuronpedia file's run: an edge across non-adjacent layers (0 -> 4)
        graph = api.prompt_graph(con, 0, run=2, k=5, min_path=1)
        assert graph.select("up", "down").rows() == [("0.tc.5", "4.tc.30000")]
        out = api.feature_edges(con, "0.tc.7", run=1).to_dicts()
        assert [(r["direction"], r["neighbour"]) for r in out] == [("out", "1.tc.12")]
        assert api.feature_edges(con, "0.7", run=1).height == 0  # the residual 0.7 is another feature


# -- migration 0013 on an older database ------------------------------------------------------


def test_migration_0013_upgrades_a_database_built_at_0010(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, "
                "applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")  # fmt: skip
    for mig in available_migrations():
        if mig.version <= 10:
            con.execute(mig.sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [mig.version, mig.name]
            )
    insert_run(con, "old", "complete")
    edges = HAND_GRAPH[2][1]
    con.execute("INSERT INTO prompts (run_id, prompt_id, text, text_sha256, n_tokens, n_ablations, ingested_at) "
                "VALUES (1, 0, 'p', 'h', 2, 1, now())")  # fmt: skip
    for e in edges:
        con.execute("INSERT INTO edges VALUES (1, 0, ?, ?, ?, ?, ?)", list(e))
    tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
    before = {
        t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
        for t in tables
        if t != "schema_migrations"
    }
    con.close()
    with open_database(path) as db:  # applies 0013 (and whatever else is newer)
        assert 13 in {r[0] for r in db.fetchall("SELECT version FROM schema_migrations")}
        for t, old in before.items():
            assert sorted(db.fetchall(f"SELECT * FROM {t}"), key=repr) == old, t
        general = db.fetchall("SELECT up_kind, up_layer, up_feature, up_position, down_layer, down_feature, weight "
                              "FROM graph_edges ORDER BY ALL")  # fmt: skip
        assert [(*g[:6], round(g[6], 6)) for g in general] == sorted(
            ("feature", u, f, None, d, g, round(w, 6)) for u, f, d, g, w in edges
        )
