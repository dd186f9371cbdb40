"""The prompt-graph page draws an imported graph's per-position nodes."""

from __future__ import annotations

import json

from graph_files import CT_GRAPH, write
from test_dashboard_support import app_test

from featuregraph.store.db import open_database
from featuregraph.store.graph_import import import_graphs


def test_the_prompt_graph_page_draws_an_imported_graph_by_layer_and_position(tmp_path, monkeypatch):
    db = tmp_path / "g.duckdb"
    import_graphs(db, [write(tmp_path / "ct.json", CT_GRAPH)])
    at = app_test(monkeypatch, db, "graph", prompt=0).run()
    assert not at.exception, [e.value for e in at.exception]
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    spec = json.loads(charts[0].proto.spec)
    assert "position" in json.dumps(spec) and "layer" in json.dumps(spec)
    captions = "\n".join(c.value for c in at.caption)
    assert (
        f"{len(CT_GRAPH['nodes'])} nodes at their positions, the {len(CT_GRAPH['links'])} strongest links"
        in captions
    )
    assert any("ct-hand" in m.value for m in at.markdown)
    # the drawing's coordinates: every node at its position (within the cell) and layer
    from featuregraph.query.graphs import graph_layout

    with open_database(db, read_only=True) as con:
        placed = graph_layout(con, 1, 0)
    for node, x, y in zip(CT_GRAPH["nodes"], placed["x"], placed["y"], strict=True):
        assert abs(x - node["ctx_idx"]) < 0.5
        assert y == (-1 if node["layer"] == "E" else int(node["layer"]))
