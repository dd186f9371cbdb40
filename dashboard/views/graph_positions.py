"""The prompt-graph page's per-position drawing of an imported graph (docs/graphs.md)."""

from __future__ import annotations

import json

import altair as alt
import streamlit as st

from featuregraph.dashboard.data import load
from featuregraph.dashboard.graph import BLUE, RED

KIND_COLORS = {
    "feature": "#4c78a8",
    "embedding": "#54a24b",
    "error": "#9d9d9d",
    "logit": "#e45756",
    "bias": "#b279a2",
}


def draw_imported(run: int, prompt_id: int) -> bool:
    """Draw prompt ``prompt_id``'s stored graph by layer (up) and position (across), if it has one."""
    info = load("graph_info", run, prompt_id)
    if info.height == 0:
        return False
    row = info.row(0, named=True)
    st.markdown(f"**Imported graph** `{row['slug']}` ({row['method']}, model `{row['scan']}`)")
    top = st.slider("Links drawn at most", 10, 1000, 200, step=10, key="graph_positions_links")
    nodes = load("graph_layout", run, prompt_id).to_pandas()
    links = load("graph_layout_links", run, prompt_id, top).to_pandas()
    links["color"] = [RED if w < 0 else BLUE for w in links["weight"]]
    tokens = list(row["prompt_tokens"])
    axis_x = alt.Axis(
        values=list(range(len(tokens))), labelExpr=f"{json.dumps(tokens)}[datum.value]", title="position"
    )
    x = alt.X("x:Q", axis=axis_x, scale=alt.Scale(domain=[-0.5, len(tokens) - 0.5]))
    y = alt.Y("y:Q", title="layer (-1: embeddings)")
    rules = alt.Chart(links).mark_rule(opacity=0.5).encode(
        x=x, y=y, x2="x2:Q", y2="y2:Q", color=alt.Color("color:N", scale=None),
        tooltip=["source", "target", alt.Tooltip("weight:Q", format="+.4g")],
    )  # fmt: skip
    points = alt.Chart(nodes).mark_circle(size=70, opacity=0.9).encode(
        x=x, y=y,
        color=alt.Color("kind:N", scale=alt.Scale(domain=list(KIND_COLORS), range=list(KIND_COLORS.values()))),
        tooltip=["node_id", "name", "kind", "feature_type", "layer_label", "position", "clerp",
                 alt.Tooltip("activation:Q", format=".3g"), alt.Tooltip("token_prob:Q", format=".3f")],
    )  # fmt: skip
    st.altair_chart((rules + points).properties(height=420), width="stretch")
    st.caption(
        f"{len(nodes)} nodes at their positions, the {len(links)} strongest links. Red: ablating the source "
        "suppresses the target (the file's weight is positive), blue: it promotes it. The feature graph below "
        "sums each feature pair's links over positions."
    )
    return True
