"""Dashboard parts that need no Streamlit session: the DOT drawing, token windows, path lengths,
the graph query, Neuronpedia links, the dashboard command and imports without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys

import polars as pl
import pytest
from test_dashboard_support import dashboard_db_fixture  # noqa: F401

from featuregraph.dashboard import graph as g
from featuregraph.query import api
from featuregraph.query.features import neuronpedia_url
from featuregraph.query.prompts import longest_paths, prompt_graph_snr
from featuregraph.store.db import open_database
from featuregraph.store.models import Node


def test_dot_escapes_labels_and_colours_by_sign():
    a, b, c = Node(0, 1), Node(1, 2), Node(1, 3)
    boxes = {
        a: g.NodeBox(a, ["<b>", ' "x"', "&", "\n", ""], [0.0, 2.0, 1.0, 0.0, 0.0],
                     promoted=[g.TokenEffect("<|endoftext|>", 0.1)], suppressed=[g.TokenEffect("a]b", -0.2)]),
    }  # fmt: skip
    edges = [g.GraphEdge(a, b, -0.5, note='z "9"'), g.GraphEdge(a, c, 0.25)]
    dot = g.build_dot(edges, boxes, g.DrawOptions(link=lambda n: f'?page=feature&feature={n}"'))
    assert "&lt;b&gt;" in dot and "&quot;x&quot;" in dot and "&amp;" in dot and "&lt;|endoftext|&gt;" in dot
    assert "<b>" not in dot.replace("<B>", "").replace("</B>", "")
    assert "\u23ce" in dot and "\u2205" in dot  # newline and empty token made visible
    assert 'URL="?page=feature&feature=0.1\\""' in dot  # quoted attribute escaped
    assert 'z \\"9\\"' in dot
    red, blue = g.edge_color(-0.5, 0.5), g.edge_color(0.25, 0.5)
    assert red[0] == g.RED + "ff" and blue[0].startswith(g.BLUE) and blue[1] < red[1]
    assert f'n0_1 -> n1_2 [color="{red[0]}"' in dot and f'n0_1 -> n1_3 [color="{blue[0]}"' in dot
    assert int(blue[0][-2:], 16) < 255  # weaker edge: more transparent
    assert "subgraph layer_1 { rank=same; n1_2 n1_3; }" in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_dot_is_valid_graphviz():
    a, b = Node(0, 1), Node(1, 2)
    box = g.NodeBox(a, ["<", ">", "&", '"', "'", "\t", "\x01", "é"], [1, 2, 3, 4, 5, 6, 7, 8])
    dot = g.build_dot(
        [g.GraphEdge(a, b, -1.0)], {a: box}, g.DrawOptions(link=lambda n: f"?feature={n}&x=\"'<>")
    )
    out = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, check=True)
    assert "?feature=0.1&" in out.stdout and "&lt;" in out.stdout and not out.stderr


def test_token_window_follows_the_peak():
    assert g.token_window([0, 1, 0], 10) == (0, 3)
    acts = [0.0] * 30
    acts[20] = 1.0
    assert g.token_window(acts, 10) == (15, 25)
    acts[20], acts[29] = 0.0, 1.0
    assert g.token_window(acts, 10) == (20, 30)
    assert g.visible_token(" a\tb\x00") == "\u00a0a\u21e5b"


# -- queries -----------------------------------------------------------------------------------


def test_longest_paths_on_a_hand_graph():
    edges = pl.DataFrame(
        {"up_layer": [0, 1, 2, 0, 1], "up_feature": [1, 2, 3, 9, 8], "down_layer": [1, 2, 3, 1, 2],
         "down_feature": [2, 3, 4, 8, 7]}
    )  # fmt: skip
    assert longest_paths(edges).to_list() == [3, 3, 3, 2, 2]


def test_prompt_graph_snr_without_a_threshold_is_the_macro(dashboard_db):
    with open_database(dashboard_db.path, read_only=True) as db:
        plain = api.prompt_graph(db, 2, dashboard_db.run_id, k=3, min_path=2)
        with_noise = prompt_graph_snr(db, 2, dashboard_db.run_id, 3, 2, 0.0, 1, 0.0)
        recomputed = longest_paths(api.prompt_graph(db, 2, dashboard_db.run_id, k=3, min_path=1))
        assert with_noise.select(plain.columns).equals(plain)
        assert with_noise["z_score"].null_count() < with_noise.height
        assert recomputed.max() == 2


def test_neuronpedia_url():
    assert (
        neuronpedia_url("gpt2-small/5-res-jb", 10603) == "https://neuronpedia.org/gpt2-small/5-res-jb/10603"
    )
    assert neuronpedia_url(None, 3) is None and neuronpedia_url("", 3) is None


def test_dashboard_command(tmp_path):
    from typer.testing import CliRunner

    from featuregraph.cli import app
    from featuregraph.dashboard.launch import streamlit_command

    result = CliRunner().invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--headless" in result.output
    result = CliRunner().invoke(app, ["dashboard", str(tmp_path / "missing.duckdb")])
    assert result.exit_code == 2 and "no database at" in result.output
    cmd = streamlit_command(tmp_path / "x.duckdb", port=9999, headless=True)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboard/app.py")
    assert cmd[cmd.index("--server.port") + 1] == "9999" and cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[-2:] == ["--db", str(tmp_path / "x.duckdb")]


def test_the_dashboard_imports_without_torch():
    code = (
        "import sys; import featuregraph.dashboard.data, featuregraph.dashboard.graph, featuregraph.dashboard.launch; "
        "import featuregraph.dashboard.nav, featuregraph.dashboard.render, featuregraph.dashboard.views.graph; "
        "import featuregraph.dashboard.views.paths, featuregraph.dashboard.views.feature; "
        "import featuregraph.dashboard.views.noise, featuregraph.dashboard.views.sql; "
        "import featuregraph.dashboard.views.overview, featuregraph.query.cli, featuregraph.query.helpers; "
        "assert 'torch' not in sys.modules and 'sae_lens' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_highlighted_path_is_framed_and_thick():
    a, b, c = Node(0, 1), Node(1, 2), Node(2, 3)
    dot = g.build_dot(
        [g.GraphEdge(a, b, 0.9), g.GraphEdge(b, c, -0.01, highlight=True)], {},
        g.DrawOptions(highlight=frozenset({b, c})),
    )  # fmt: skip
    lines = dot.splitlines()
    path_edge = next(line for line in lines if "n1_2 -> n2_3" in line)
    other_edge = next(line for line in lines if "n0_1 -> n1_2" in line)
    assert 'class="fg-path"' in path_edge and f"penwidth={g.PATH_PEN:.2f}" in path_edge
    assert 'class="fg-path"' not in other_edge  # the stronger edge off the path stays plain
    framed = [line for line in lines if line.lstrip().startswith(("n1_2 [", "n2_3 ["))]
    assert len(framed) == 2 and all('BORDER="3"' in x and 'class="fg-path"' in x for x in framed)
    assert 'BORDER="3"' not in next(line for line in lines if line.lstrip().startswith("n0_1 ["))
