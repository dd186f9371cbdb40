"""The dashboard's pages under Streamlit's AppTest, its DOT drawing and its queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from urllib.parse import parse_qs, urlparse

import duckdb
import polars as pl
import pytest
from test_dashboard_support import app_test, dashboard_db_fixture  # noqa: F401

from featuregraph.dashboard import graph as g
from featuregraph.errors import DatabaseLockedError
from featuregraph.query import api
from featuregraph.query.reader import open_reader
from featuregraph.store.db import open_database
from featuregraph.store.models import Node

SIGN_TEXT = "ablated minus clean"


def _texts(at) -> str:
    """Every caption, markdown and alert text of a finished run, as one string."""
    parts = [e.value for kind in ("caption", "markdown", "info", "warning", "error", "header", "subheader")
             for e in getattr(at, kind)]  # fmt: skip
    parts += [e.value for e in at.sidebar.markdown]
    return "\n".join(str(p) for p in parts)


def _edges(dot: str) -> int:
    """Arrows in DOT source (tooltips mention "->" too)."""
    return len(re.findall(r"^  n\d+_\d+ -> n\d+_\d+ ", dot, flags=re.M))


def _ok(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _expected_graph(db_path, run, prompt, k=3, min_path=2) -> pl.DataFrame:
    with open_database(db_path, read_only=True) as db:
        return api.prompt_graph(db, prompt, run, k=k, min_path=min_path)


# -- pages -------------------------------------------------------------------------------------


def test_overview_lists_runs_tags_and_counts(dashboard_db, monkeypatch):
    at = app_test(monkeypatch, dashboard_db.path).run()
    _ok(at)
    assert at.sidebar.radio[0].value == "overview"
    runs = at.dataframe[0].value
    assert list(runs["run_id"]) == [dashboard_db.run_id]
    assert runs["status"][0] == "complete" and runs["prompts_done"][0] == 8
    tags = at.dataframe[2].value
    assert dict(zip(tags["tag"], tags["prompts"], strict=True)) == {"alpha": 4, "beta": 4}
    counts = dict(zip(at.dataframe[3].value["table"], at.dataframe[3].value["rows"], strict=True))
    assert counts["prompts"] == 8 and counts["edges"] > 0 and counts["experiments"] == 3
    assert set(at.dataframe[4].value["kind"]) == {"noise", "validation", "curve"}
    assert SIGN_TEXT in _texts(at)


def test_prompt_graph_draws_the_pruned_graph(dashboard_db, monkeypatch):
    run, prompt = dashboard_db.run_id, 2
    at = app_test(monkeypatch, dashboard_db.path, "graph", prompt=prompt).run()
    _ok(at)
    expected = _expected_graph(dashboard_db.path, run, prompt)
    strongest = expected.sort(pl.col("weight").abs(), descending=True).head(30)
    dot = at.get("graphviz_chart")[0].proto.spec
    want = {g.node_id(Node(a, b)) for a, b in strongest.select("up_layer", "up_feature").iter_rows()}
    want |= {g.node_id(Node(a, b)) for a, b in strongest.select("down_layer", "down_feature").iter_rows()}
    drawn = {
        line.split()[0] for line in dot.splitlines() if line.strip().startswith("n") and "[label=<" in line
    }
    assert drawn == want
    assert _edges(dot) == strongest.height
    assert g.RED in dot and g.BLUE in dot  # both signs present in this graph
    assert 'URL="?page=feature&feature=' in dot and f"run={run}" in dot
    assert "When Mary and John" in "\n".join(e.value for e in at.code)
    top = at.dataframe[0].value
    assert list(top["rank"]) == list(range(1, len(top) + 1)) and len(top) == 10
    assert SIGN_TEXT in _texts(at)

    # fewer edges drawn, then a stricter path length: the graph follows the controls
    at.slider(key="graph_max_edges").set_value(5).run()
    assert _edges(at.get("graphviz_chart")[0].proto.spec) == 5
    at.slider(key="graph_min_path").set_value(3).run()
    # three SAE layers: paths of two edges at most
    assert not at.get("graphviz_chart") and "No edges left" in _texts(at)


# Plain SQL for the graph page's signal-to-noise filter, written out from the definitions (not the
# query layer's code): the top-$k edges per upstream feature by |weight|, those whose z-score
# against the noise experiment, (weight - noise mean) / noise std (none where the std is 0), reaches
# $min_snr, and of those the
# edges on a path of two edges. The dashboard database has SAEs at layers 0, 1, 2 only, so a path
# has at most two edges, and an edge is on one when another kept edge continues or precedes it.
SNR_GRAPH_EDGES = """
WITH ranked AS (
    SELECT *, row_number() OVER (PARTITION BY up_layer, up_feature ORDER BY abs(weight) DESC) AS r
    FROM edges WHERE run_id = $run AND prompt_id = $prompt
), strong AS (
    SELECT t.up_layer, t.up_feature, t.down_layer, t.down_feature FROM ranked t
    JOIN noise_edges n ON n.experiment_id = $experiment AND n.up_layer = t.up_layer
     AND n.up_feature = t.up_feature AND n.down_layer = t.down_layer AND n.down_feature = t.down_feature
    WHERE t.r <= $k AND abs((t.weight - n.mean) / nullif(n.std, 0)) >= $min_snr
)
SELECT count(*) FROM strong s WHERE EXISTS (
    SELECT 1 FROM strong o
    WHERE (o.up_layer = s.down_layer AND o.up_feature = s.down_feature)
       OR (o.down_layer = s.up_layer AND o.down_feature = s.up_feature))
"""


def test_prompt_graph_signal_to_noise_filter(dashboard_db, monkeypatch):
    at = app_test(monkeypatch, dashboard_db.path, "graph", prompt=2).run()
    _ok(at)
    at.slider(key="graph_max_edges").set_value(300).run()
    before = _edges(at.get("graphviz_chart")[0].proto.spec)
    at.number_input(key="graph_min_snr").set_value(3.0).run()
    _ok(at)
    charts = at.get("graphviz_chart")
    after = _edges(charts[0].proto.spec) if charts else 0
    assert after < before
    con = duckdb.connect(str(dashboard_db.path), read_only=True)
    try:
        (experiment,) = con.execute("SELECT experiment_id FROM experiments WHERE kind = 'noise'").fetchone()
        params = {"run": dashboard_db.run_id, "prompt": 2, "experiment": experiment, "k": 3, "min_snr": 3.0}
        (kept,) = con.execute(SNR_GRAPH_EDGES, params).fetchone()
    finally:
        con.close()
    assert after == kept > 0


def test_prompt_picker_search_and_feature_navigation(dashboard_db, monkeypatch):
    at = app_test(monkeypatch, dashboard_db.path, "graph").run()
    _ok(at)
    at.text_input(key="graph_search").input("copyright").run()
    options = at.selectbox(key="qp_prompt").options
    assert len(options) == 2 and all("Copyright" in o for o in options)
    feature = at.selectbox(key="graph_open_feature").value
    at.button(key="graph_open_button").click().run()
    _ok(at)
    assert at.sidebar.radio[0].value == "feature"
    assert at.query_params["feature"] == feature
    assert f"Feature {feature}" in _texts(at)


# Plain SQL for two-edge recurring paths (definitions in docs/sql.md, not the macro's code): chains
# u -> v -> w of edges through consecutive layers in the same prompt, keyed by features and signs,
# with the number of prompts where both edges are at least $rel x their ablation's largest |weight|
# (support), and where they occur at all (support_any, and the prompts).
TWO_EDGE_PATHS = """
WITH e AS (
    SELECT *, max(abs(weight)) OVER (PARTITION BY run_id, prompt_id, up_layer, up_feature) AS biggest
    FROM edges WHERE run_id = $run AND down_layer = up_layer + 1
)
SELECT a.up_layer || '.' || a.up_feature || ' -> ' || a.down_layer || '.' || a.down_feature
       || ' -> ' || b.down_layer || '.' || b.down_feature AS path,
       CASE WHEN a.weight < 0 THEN '-' ELSE '+' END || CASE WHEN b.weight < 0 THEN '-' ELSE '+' END AS signs,
       count(DISTINCT a.prompt_id) FILTER (WHERE abs(a.weight::DOUBLE) >= $rel * a.biggest::DOUBLE
                                             AND abs(b.weight::DOUBLE) >= $rel * b.biggest::DOUBLE) AS support,
       count(DISTINCT a.prompt_id) AS support_any,
       list(DISTINCT a.prompt_id ORDER BY a.prompt_id) AS prompts
FROM e a JOIN e b ON b.run_id = a.run_id AND b.prompt_id = a.prompt_id
 AND b.up_layer = a.down_layer AND b.up_feature = a.down_feature
GROUP BY ALL HAVING support >= 2
"""


def test_recurring_paths_and_drill_in(dashboard_db, monkeypatch):
    at = app_test(monkeypatch, dashboard_db.path, "paths").run()
    _ok(at)
    from featuregraph.query.helpers import helper

    table = at.dataframe[0].value
    rel = helper("recurring").param("min_rel_weight").default  # the page starts from the CLI's default
    assert rel > 0 and at.number_input(key="paths_min_rel_weight").value == rel
    con = duckdb.connect(str(dashboard_db.path), read_only=True)
    try:
        expected = con.execute(TWO_EDGE_PATHS, {"run": dashboard_db.run_id, "rel": rel}).fetchall()
    finally:
        con.close()
    assert len(expected) > 0
    shown = set(zip(table["path"], table["sign_pattern"], table["support"], table["support_any"], strict=True))
    every = {(path, signs, support, support_any) for path, signs, support, support_any, _ in expected}
    # the page opens at support 2 with the top 100: the most supported of every path
    assert shown <= every and len(shown) == min(100, len(every))
    assert min(r[2] for r in shown) >= max((r[2] for r in every - shown), default=0)
    assert table["support"].is_monotonic_decreasing
    first = " -> ".join(dashboard_db.path_nodes)
    assert table["path"][0] == first and table["sign_pattern"][0] == dashboard_db.path_signs
    prompts = at.dataframe[1].value
    want = [ids for path, signs, _, _, ids in expected if (path, signs) == (first, table["sign_pattern"][0])][0]
    assert sorted(prompts["prompt_id"]) == want and len(prompts) >= 2
    assert prompts["graph"][0].startswith("?page=graph&prompt=")
    # each prompt's graph link follows the path (highlighted there): ?path=...&signs=...
    link = parse_qs(urlparse(prompts["graph"][0]).query)
    assert link["path"] == [first] and link["signs"] == [dashboard_db.path_signs]
    # the search's filters are in the URL
    assert at.query_params["min_support"] == "2" and at.query_params["top"] == "100"

    # another path, by the select; then sort by strength
    second = at.selectbox(key="qp_open").options[1]
    at.selectbox(key="qp_open").set_value(second).run()
    _ok(at)
    assert f"Prompts containing {second.split('  [')[0]}" in _texts(at)
    at.selectbox(key="paths_sort").set_value("strength").run()
    strength = at.dataframe[0].value["strength"]
    assert strength.is_monotonic_decreasing
    at.button(key="paths_open_graph").click().run()
    _ok(at)
    assert at.sidebar.radio[0].value == "graph" and at.get("graphviz_chart")
    assert at.query_params["path"] == second.split("  [")[0]  # the graph follows the path


def test_recurring_paths_filters(dashboard_db, monkeypatch):
    at = app_test(monkeypatch, dashboard_db.path, "paths").run()
    at.text_input(key="paths_signs").input("++")
    at.number_input(key="paths_support").set_value(3)
    at.button[0].click().run()  # the form's Search button
    _ok(at)
    with open_database(dashboard_db.path, read_only=True) as db:
        expected = api.recurring_paths(db, n_edges=2, min_support=3, run=dashboard_db.run_id, signs="++")
    if expected.height == 0:
        assert "No recurring path" in _texts(at)
    else:
        table = at.dataframe[0].value
        assert set(table["sign_pattern"]) == {"++"} and (table["support"] >= 3).all()
    at.text_input(key="paths_signs").input("+x")
    at.button[0].click().run()
    assert any("sign pattern" in e.value for e in at.error)  # one line, no traceback
    assert not at.exception


def test_feature_page(dashboard_db, monkeypatch):
    up = dashboard_db.path_nodes[0]
    at = app_test(monkeypatch, dashboard_db.path, "feature", feature=up, run=dashboard_db.run_id).run()
    _ok(at)
    texts = _texts(at)
    assert f"Feature {up}" in texts and SIGN_TEXT in texts
    assert [t.label for t in at.tabs] == [
        "Top contexts",
        "Edges",
        "Logit effects",
        "Noise",
        "Response curves",
    ]
    with open_database(dashboard_db.path, read_only=True) as db:
        contexts = api.top_contexts(db, up, dashboard_db.run_id, top=10)
        edges = api.feature_edges(db, up, dashboard_db.run_id, top=20)
    html = at.get("html")
    assert len(html) == contexts.height and "background: rgba(255,127,14" in html[0].proto.body
    out_edges = [d.value for d in at.dataframe if "neighbour" in d.value.columns]
    assert sum(len(d) for d in out_edges) == edges.height
    assert len(at.get("vega_lite_chart")) >= 2  # logit effects, and the curve along the path
    assert any("curve #" in m.value for m in at.markdown)
    assert not at.get("link_button")  # the tiny SAEs have no Neuronpedia id
    # the edge table follows its form: one neighbour per direction
    at.number_input(key="feature_top_edges").set_value(1).run()
    _ok(at)
    with open_database(dashboard_db.path, read_only=True) as db:
        one = api.feature_edges(db, up, dashboard_db.run_id, top=1)
    shown = [d.value for d in at.dataframe if "neighbour" in d.value.columns]
    assert sum(len(d) for d in shown) == one.height < edges.height
    # neighbours are one click away
    at.button(key="feature_open_neighbour").click().run()
    _ok(at)
    assert at.query_params["feature"] != up


def test_feature_page_links_to_neuronpedia(dashboard_db, monkeypatch, tmp_path):
    copy = tmp_path / "np.duckdb"
    shutil.copy(dashboard_db.path, copy)
    con = duckdb.connect(str(copy))
    con.execute("UPDATE run_saes SET neuronpedia_id = 'gpt2-small/0-res-jb' WHERE layer = 0")
    con.close()
    at = app_test(monkeypatch, copy, "feature", feature="0.7").run()
    _ok(at)
    assert at.get("link_button")[0].proto.url == "https://neuronpedia.org/gpt2-small/0-res-jb/7"
    at = app_test(monkeypatch, copy, "feature", feature="1.7").run()
    assert not at.get("link_button")


def test_feature_page_unknown_feature_is_one_line(dashboard_db, monkeypatch):
    at = app_test(monkeypatch, dashboard_db.path, "feature", feature="9.1").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["no SAE at layer 9 for feature 9.1 (layers: 0, 1, 2)"]
    at.text_input(key="qp_feature").input("abc").run()
    assert "LAYER.FEATURE" in at.error[0].value and not at.exception


def test_noise_and_validation_page(dashboard_db, monkeypatch):
    at = app_test(monkeypatch, dashboard_db.path, "noise").run()
    _ok(at)
    assert SIGN_TEXT in _texts(at)
    assert len(at.get("vega_lite_chart")) == 3  # |weight| and |dprob| against noise, per feature

    at.radio(key="qp_section").set_value("edges").run()
    _ok(at)
    assert len(at.get("vega_lite_chart")) == 1  # |z| of recurring edges
    best = [d.value for d in at.dataframe if "z_of_mean" in d.value.columns][0]
    assert len(best) > 0 and best["z_of_mean"].abs().is_monotonic_decreasing and (best["prompts"] >= 2).all()
    at.number_input(key="noise_min_prompts").set_value(3).run()
    best = [d.value for d in at.dataframe if "z_of_mean" in d.value.columns][0]
    assert (best["prompts"] >= 3).all()

    at.radio(key="qp_section").set_value("validation").run()
    _ok(at)
    assert at.query_params["section"] == "validation"
    metrics = {m.label: m.value for m in at.metric}
    assert set(metrics) >= {
        "answer log-prob change: path median",
        "answer log-prob change: control median",
        "mean total variation: path",
        "mean total variation: control",
    }
    with duckdb.connect(str(dashboard_db.path), read_only=True) as con:
        summary = json.loads(con.execute("SELECT summary FROM experiments WHERE kind = 'validation'").fetchone()[0])
    lead = summary["answer_dlogp"]
    assert metrics["answer log-prob change: path median"] == f"{lead['path']['median']:.3g}"
    # The page leads with the answer's change against the control's, as the CLI does.
    texts = _texts(at)
    assert "answer log-prob change: path median" in texts and "sign test p =" in texts
    results = [
        d.value for d in at.dataframe if "arm" in d.value.columns and "total_variation" in d.value.columns
    ][0]
    assert sorted(set(results["arm"])) == ["control", "path"] and len(results) == 6
    assert set(results[results["arm"] == "path"]["features"]) == {",".join(dashboard_db.path_nodes)}
    assert len(at.get("vega_lite_chart")) == 1
    tokens = [d.value for d in at.dataframe if "p_ablated" in d.value.columns][0]
    assert set(tokens["arm"]) == {"clean", "path", "control"}

    at.radio(key="qp_section").set_value("curves").run()
    _ok(at)
    assert len(at.get("vega_lite_chart")) == 2  # downstream activation, token probabilities


def test_sql_console_runs_reads_and_refuses_writes(dashboard_db, monkeypatch):
    at = app_test(monkeypatch, dashboard_db.path, "sql").run()
    _ok(at)
    at.text_area(key="sql_text").input("SELECT prompt_id, tag FROM prompts ORDER BY prompt_id")
    at.button[0].click().run()
    _ok(at)
    frame = at.dataframe[0].value
    assert list(frame["prompt_id"]) == list(range(8))
    assert {b.proto.label for b in at.get("download_button")} == {"Download CSV", "Download Parquet"}
    at.number_input(key="sql_rows").set_value(3)
    at.button[0].click().run()
    assert len(at.dataframe[0].value) == 3 and "stopped at the row cap" in _texts(at)
    for statement in ("DELETE FROM runs", "COPY runs TO '/tmp/x.csv'", "SELECT 1; DROP TABLE runs"):
        at.text_area(key="sql_text").input(statement)
        at.button[0].click().run()
        assert not at.exception
        assert len(at.error) == 1 and at.error[0].value.startswith("Refused:"), statement
        assert not at.dataframe
    with open_database(dashboard_db.path, read_only=True) as db:
        assert db.fetchone("SELECT count(*) FROM runs")[0] == 1
    at.text_area(key="sql_text").input("SELECT * FROM no_such_table")
    at.button[0].click().run()
    assert "no_such_table" in at.error[0].value and not at.exception


def test_a_table_cut_at_the_row_cap_says_so(dashboard_db, monkeypatch):
    from featuregraph.dashboard import data
    from featuregraph.store.db import QueryLimits

    at = app_test(monkeypatch, dashboard_db.path).run()
    _ok(at)
    assert not any("row cap" in w.value for w in at.warning)  # nothing cut under the usual cap
    with open_database(dashboard_db.path, read_only=True) as db:
        saes = db.fetchone("SELECT count(*) FROM run_saes")[0]
        experiments = db.fetchone("SELECT count(*) FROM experiments")[0]
    assert saes > 2 and experiments > 2
    monkeypatch.setattr(data, "LIMITS", QueryLimits(time_limit_s=10.0, max_rows=2))
    at = app_test(monkeypatch, dashboard_db.path).run()
    _ok(at)
    warnings = [w.value for w in at.warning]
    assert f"Run saes: first 2 rows of {saes} (the dashboard's row cap)" in warnings
    assert f"Experiments: first 2 rows of {experiments} (the dashboard's row cap)" in warnings
    assert len(at.dataframe[1].value) == 2  # the SAEs table, cut


def test_forms_take_labels_and_defaults_from_the_helper_table(dashboard_db, monkeypatch):
    from featuregraph.query.helpers import helper

    at = app_test(monkeypatch, dashboard_db.path, "graph", prompt=2).run()
    _ok(at)
    graph = helper("prompt-graph")
    for key, name in (("graph_k", "k"), ("graph_min_path", "min_path")):
        slider = at.slider(key=key)
        assert slider.label == graph.param(name).label and slider.help == graph.param(name).help
        assert slider.value == graph.param(name).start
    at = app_test(monkeypatch, dashboard_db.path, "paths").run()
    _ok(at)
    recurring = helper("paths")
    assert at.number_input(key="paths_top").value == recurring.param("top").start == 100
    assert at.number_input(key="paths_support").value == recurring.param("min_support").start == 2
    assert at.selectbox(key="paths_rank_by").value == recurring.param("rank_by").start == "support"
    assert at.text_input(key="paths_signs").label == recurring.param("signs").label
    # filters given in the URL are where the form starts
    at = app_test(monkeypatch, dashboard_db.path, "paths", n_edges=2, min_support=2, top=7, signs="+*").run()
    _ok(at)
    assert at.number_input(key="paths_top").value == 7 and at.slider(key="paths_n_edges").value == 2
    assert at.text_input(key="paths_signs").value == "+*"
    with open_database(dashboard_db.path, read_only=True) as db:
        want = api.recurring_paths(db, 2, 2, run=dashboard_db.run_id, signs="+*", top=7,
                                   min_rel_weight=recurring.param("min_rel_weight").start)  # fmt: skip
    assert want.height > 0
    assert at.dataframe[0].value["path"].to_list() == want["path"].to_list()


def test_sidebar_moves_between_pages(dashboard_db, monkeypatch):
    at = app_test(monkeypatch, dashboard_db.path).run()
    for page in ("graph", "paths", "feature", "noise", "sql", "overview"):
        at.sidebar.radio[0].set_value(page).run()
        _ok(at)
        assert at.query_params["page"] == page


def test_every_page_of_an_empty_database(monkeypatch, tmp_path):
    empty = tmp_path / "empty.duckdb"
    open_database(empty).close()
    for page in ("overview", "graph", "paths", "feature", "noise", "sql"):
        at = app_test(monkeypatch, empty, page).run()
        _ok(at)
        if page != "sql":
            assert "no runs yet" in _texts(at)


@contextmanager
def written_by_another_process(path):
    """Another process holds ``path`` open for writing (DuckDB's lock) until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_without_a_database(monkeypatch, tmp_path):
    at = app_test(monkeypatch, None).run()
    assert not at.exception and "featuregraph dashboard DB" in at.error[0].value
    at = app_test(monkeypatch, tmp_path / "missing.duckdb").run()
    assert not at.exception and at.error[0].value == f"no database at {tmp_path / 'missing.duckdb'}"


def test_a_writer_holding_the_lock_is_one_line(dashboard_db, monkeypatch, tmp_path):
    copy = tmp_path / "locked.duckdb"
    shutil.copy(dashboard_db.path, copy)
    with written_by_another_process(copy):
        monkeypatch.setenv("FEATUREGRAPH_LOCK_WAIT", "0.2")
        at = app_test(monkeypatch, copy, "graph").run()
        assert not at.exception and not at.error
        assert len(at.warning) == 1 and at.warning[0].value.startswith(
            "An ingest is writing to this database"
        )
        assert "\n" not in at.warning[0].value
    at = app_test(monkeypatch, copy, "graph").run()  # once the writer is gone, the page is back
    _ok(at)
    assert at.get("graphviz_chart")


# -- drawing -----------------------------------------------------------------------------------


def test_open_reader_names_a_busy_database(dashboard_db, tmp_path):
    copy = tmp_path / "busy.duckdb"
    shutil.copy(dashboard_db.path, copy)
    with written_by_another_process(copy):
        with pytest.raises(DatabaseLockedError, match="in use by another process"):
            open_reader(copy, wait_s=0.1)


def test_paths_specific_to_a_tag(dashboard_db, monkeypatch):
    from featuregraph.query.helpers import helper

    at = app_test(monkeypatch, dashboard_db.path, "paths").run()
    _ok(at)
    n_tables = len(at.dataframe)  # the ranking waits for the Rank button: the page opens without it
    assert "Pick a tag and press Rank." in [c.value for c in at.caption]
    next(b for b in at.button if b.label == "Rank").click().run()
    _ok(at)
    assert len(at.dataframe) == n_tables + 1
    tag = at.selectbox(key="specific_tag").value
    assert at.query_params["specific"] == tag  # a link to the page opens with the ranking
    specific = helper("tag-specific")
    with open_database(dashboard_db.path, read_only=True) as db:
        expected = api.tag_specific_paths(
            db, tag, run=dashboard_db.run_id,
            **{p.name: p.start for p in specific.params if p.name not in ("tag", "run")},
        )  # fmt: skip
    assert expected.height > 0
    table = at.dataframe[-1].value
    assert table["path"].to_list() == expected["path"].to_list()
    assert table["specificity"].to_list() == expected["specificity"].to_list()
