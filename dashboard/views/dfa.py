"""The feature page's DFA tab: an attention feature's pre-activation split by head and source
token (docs/method.md#direct-feature-attribution)."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from featuregraph.dashboard.data import load
from featuregraph.dashboard.graph import BLUE, RED, visible_token
from featuregraph.errors import FeaturegraphError
from featuregraph.query.api import parse_node
from featuregraph.store.models import decode_feature

CAPTION = (
    "Direct feature attribution at the read position: each cell is head h's part from source token s, "
    "A[h,t,s] <v_h(s), W_enc[h-block, i]>, a contribution to the pre-activation. Red cells support the feature "
    "(removing them lowers it, like a red edge), blue ones oppose it. Only the top-k parts are stored; "
    "'rest' sums the others, and with the bias terms everything sums to the pre-activation."
)


def is_attention(name: str) -> bool:
    """Whether ``name`` is a feature of an attention-output (hook_z) SAE."""
    try:
        return decode_feature(parse_node(name).feature)[0] == "attn_z"
    except (FeaturegraphError, ValueError):  # a name the page reports elsewhere
        return False


def dfa_heatmap(parts: pl.DataFrame, title: str) -> alt.Chart:
    """Head x source-token heatmap of ``head_source`` parts (columns head, source_position,
    source_token, value); the colour scale is symmetric around zero."""
    cells = parts.with_columns(
        (pl.col("source_position").cast(pl.String) + ": "
         + pl.col("source_token").fill_null("").map_elements(visible_token, return_dtype=pl.String)).alias("source")
    ).select("head", "source_position", "source", "value")  # fmt: skip
    top = float(cells["value"].abs().max() or 1.0)
    order = cells.sort("source_position")["source"].unique(maintain_order=True).to_list()
    return (
        alt.Chart(cells.to_pandas(), title=title)
        .mark_rect()
        .encode(
            x=alt.X("source:N", sort=order, title="source token"),
            y=alt.Y("head:O", title="head"),
            color=alt.Color("value:Q", scale=alt.Scale(domain=[-top, 0, top], range=[BLUE, "#f7f7f7", RED])),
            tooltip=["head", "source", alt.Tooltip("value:Q", format=".4g")],
        )
    )


def render_dfa(run: int, name: str) -> None:
    prompts = load("feature_dfa_prompts", name, run, 50)
    if prompts.height == 0:
        st.info(f"No DFA stored for this feature (`featuregraph dfa DB --run {run}`).")
        return
    st.caption(CAPTION)
    rows = {r["prompt_id"]: r for r in prompts.iter_rows(named=True)}
    chosen = st.selectbox("Prompt", list(rows), key="feature_dfa_prompt",
                          format_func=lambda p: f"#{p}: {rows[p]['text'][:60]}")  # fmt: skip
    row = rows[chosen]
    st.markdown(f"Pre-activation **{row['pre_activation']:.4g}** at position {row['position']} "
                f"(activation {row['activation']:.4g}).")  # fmt: skip
    parts = load("feature_dfa_parts", name, run, chosen)
    direct = parts.filter(pl.col("method") == "dfa")
    cells = direct.filter(pl.col("term") == "head_source")
    st.altair_chart(dfa_heatmap(cells, f"{name}: parts by head and source token"), width="stretch")
    st.dataframe(direct.filter(pl.col("term") != "head_source").select("term", "value"), hide_index=True)
    resid = parts.filter(pl.col("method") == "dfa_resid")
    if resid.height:
        st.markdown(f"**Into the residual SAE at layer {row['resid_layer']}** (pattern and ln1 scale frozen): "
                    "each recursed head-source part split over the residual features active at its source.")  # fmt: skip
        st.dataframe(
            resid.select("head", "source_position", "source_token", "term", "up", "value"), hide_index=True
        )


__all__ = ["dfa_heatmap", "is_attention", "render_dfa"]
