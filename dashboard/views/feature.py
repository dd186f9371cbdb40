"""Feature page: where a feature activates, its edges and logit effects across prompts, its
noise statistics and response curves, and its Neuronpedia page."""

from __future__ import annotations

import json

import altair as alt
import polars as pl
import streamlit as st

from featuregraph.dashboard import nav
from featuregraph.dashboard.data import load
from featuregraph.dashboard.forms import widget
from featuregraph.dashboard.render import shaded_tokens, signed_bars
from featuregraph.dashboard.views.dfa import is_attention, render_dfa
from featuregraph.query.api import parse_node
from featuregraph.query.features import neuronpedia_url


def _pick(run: int) -> str | None:
    busy = load("busy_features", run, 20)["feature"].to_list()
    left, right = st.columns([1, 2])
    with left:
        text = nav.bound_text(
            "Feature (LAYER.FEATURE or LAYER.SITE.FEATURE)",
            "feature",
            busy[0] if busy else "",
            placeholder="e.g. 5.10603, 5.att.12",
        )
    if busy:
        right.markdown(
            "Busy features (many out-edges): "
            + " ".join(f"[{f}]({nav.href('feature', feature=f, run=run)})" for f in busy[:12])
        )
    return text.strip() or None


def _header(run: int, name: str) -> None:
    node = parse_node(name)
    sae = load("feature_sae", name, run)
    if sae.height == 0:
        st.subheader(f"Feature {node}")
        return
    row = sae.row(0, named=True)
    st.subheader(f"Feature {node}")
    site = "" if row["site_kind"] == "resid" else f" ({row['site_kind']})"
    st.caption(f"SAE at layer {row['layer']}{site}: `{row['hook_name']}`, {row['d_sae']} features"
               + (f", {row['release']} / {row['sae_id']}" if row["release"] else ""))  # fmt: skip
    url = neuronpedia_url(row["neuronpedia_id"], node.feature)
    if url:
        st.link_button("Open on Neuronpedia", url)
        st.caption(url)


def _contexts(run: int, name: str) -> None:
    top = widget("contexts", "top", "feature_top_contexts")
    contexts = load("top_contexts", name, run, int(top))
    if contexts.height == 0:
        st.info("This feature is not active in any stored prompt.")
        return
    for row in contexts.iter_rows(named=True):
        link = nav.href("graph", prompt=row["prompt_id"], run=run)
        st.markdown(f"**#{row['prompt_id']}** peak {row['max_activation']:.4g} at position {row['max_position']} "
                    f"\u2014 [prompt graph]({link})")  # fmt: skip
        st.html(shaded_tokens(row["tokens"], row["token_activations"]))


def _edges(run: int, name: str) -> None:
    left, right = st.columns(2)
    top = widget("neighbourhood", "top", "feature_top_edges", left)
    min_count = widget("neighbourhood", "min_count", "feature_min_count", right)
    edges = load("feature_edges", name, run, int(top), int(min_count))
    if edges.height == 0:
        st.info("No edges into or out of this feature.")
        return
    st.caption("One row per neighbour over the run's prompts: n prompts (n_pos / n_neg with each sign), mean and "
               "standard deviation of the weight (ablated minus clean), sign consistency.")  # fmt: skip
    table = edges.with_columns(
        pl.col("neighbour").map_elements(lambda f: nav.href("feature", feature=f, run=run), return_dtype=pl.String).alias("open")
    )  # fmt: skip
    config = {"open": st.column_config.LinkColumn("open", display_text="page")}
    cols = ["neighbour", "open", "n", "n_pos", "n_neg", "mean_weight", "std_weight", "sign_consistency"]
    left, right = st.columns(2)
    for col, direction, title in (
        (left, "in", "In-edges (neighbour \u2192 this)"),
        (right, "out", "Out-edges (this \u2192 neighbour)"),
    ):
        with col:
            st.markdown(f"**{title}**")
            part = table.filter(pl.col("direction") == direction).select(cols)
            st.dataframe(part, hide_index=True, column_config=config)
    neighbours = edges["neighbour"].unique(maintain_order=True).to_list()
    a, b = st.columns([2, 1])
    chosen = a.selectbox("Neighbour", neighbours, key="feature_neighbour")
    b.button("Open neighbour", on_click=nav.navigate, args=("feature",), kwargs={"feature": chosen, "run": run},
             key="feature_open_neighbour")  # fmt: skip


def _logits(run: int, name: str) -> None:
    top = widget("logits", "top", "feature_top_tokens")
    logits = load("feature_logits", name, run, int(top))
    if logits.height == 0:
        st.info("No logit effects stored for this feature.")
        return
    st.caption("Mean dprob over every ablation of the feature (ablated minus clean): blue tokens become more "
               "likely when the feature is ablated, red ones less likely.")  # fmt: skip
    st.altair_chart(signed_bars(logits, "token", "mean_dprob", "mean dprob when ablated"), width="stretch")
    st.dataframe(logits.drop("run_id"), hide_index=True)


def _noise(run: int, name: str) -> None:
    rows = load("feature_noise", name, run)
    if rows.height == 0:
        st.info("No noise experiment covers this feature (`featuregraph noise DB --corpus ...`).")
        return
    st.caption("Ablating the feature in unrelated contexts: how often it is active there, and the size of the top "
               "edges and probability changes it causes (|weight|, |dprob|).")  # fmt: skip
    st.dataframe(rows, hide_index=True)
    experiment = st.selectbox("Noise experiment", rows["experiment_id"].to_list(), key="feature_noise_exp",
                              format_func=lambda i: f"noise #{i}")  # fmt: skip
    left, right = st.columns(2)
    with left:
        st.markdown("**Out-edges in context vs noise**")
        st.dataframe(load("feature_edge_snr", name, experiment, 20), hide_index=True)
    with right:
        st.markdown("**Logit effects in context vs noise**")
        st.dataframe(load("feature_logit_snr", name, experiment, 20), hide_index=True)


def curve_charts(experiment: int, title: str) -> None:
    """Charts of one response-curve experiment: downstream activation and token probabilities."""
    points = load("curve_points", experiment)
    if points.height == 0:
        st.caption("no points")
        return
    left, right = st.columns(2)
    act = points.select("coefficient", "down_activation").unique().sort("coefficient").drop_nulls()
    if act.height:
        left.altair_chart(
            alt.Chart(act.to_pandas(), title=f"{title}: downstream activation")
            .mark_line(point=True)
            .encode(x="coefficient:Q", y="down_activation:Q", tooltip=["coefficient", "down_activation"]),
            width="stretch",
        )
    probs = points.with_columns(pl.col("token").fill_null(pl.col("token_id").cast(pl.String)).alias("token"))
    right.altair_chart(
        alt.Chart(probs.to_pandas(), title=f"{title}: next-token probability")
        .mark_line(point=True)
        .encode(x="coefficient:Q", y="prob:Q", color="token:N", tooltip=["coefficient", "token", "prob"]),
        width="stretch",
    )


def _curves(run: int, name: str) -> None:
    curves = load("feature_curves", name, run)
    if curves.height == 0:
        st.info(f"No response curve with this feature (`featuregraph curve DB --up {name} ...`).")
        return
    st.caption("The upstream feature's decoder contribution scaled by c (1 = clean, 0 = zero-ablated).")
    for row in curves.iter_rows(named=True):
        summary = json.loads(row["summary"] or "{}")
        fit = f", slope {summary['slope']:.4g} (r\u00b2 {summary['r2']:.4f})" if "slope" in summary else ""
        st.markdown(f"**curve #{row['experiment_id']}**: {row['up']} \u2192 {row['down'] or '(logits only)'} on "
                    f"`{row['prompt']}`{fit}")  # fmt: skip
        curve_charts(row["experiment_id"], f"#{row['experiment_id']}")


def render(run: int | None) -> None:
    if not nav.page_intro("Feature", run):
        return
    name = _pick(run)
    if name is None:
        st.info("Enter a feature as LAYER.FEATURE (residual) or LAYER.SITE.FEATURE (SITE att, mlp or tc).")
        return
    _header(run, name)
    attention = is_attention(name)
    tabs = st.tabs(["Top contexts", "Edges", "Logit effects", "Noise", "Response curves"] + ["DFA"] * attention)
    with tabs[0]:
        _contexts(run, name)
    with tabs[1]:
        _edges(run, name)
    with tabs[2]:
        _logits(run, name)
    with tabs[3]:
        _noise(run, name)
    with tabs[4]:
        _curves(run, name)
    if attention:
        with tabs[5]:
            render_dfa(run, name)
