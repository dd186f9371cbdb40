"""Overview: the runs with their provenance, row counts, prompts per tag, experiments."""

from __future__ import annotations

import streamlit as st

from featuregraph.dashboard import nav
from featuregraph.dashboard.data import load

RUN_COLUMNS = [
    "run_id", "status", "model", "model_source", "prompts_done", "n_prompts", "n_saes", "coefficient",
    "edge_top_k", "edge_floor", "logit_top_k", "top_next_k", "prepend_bos", "read_position", "device", "dtype",
    "featuregraph_version", "torch_version", "sae_lens_version", "transformer_lens_version", "started_at",
    "finished_at", "prompts_source", "model_sha256",
]  # fmt: skip


def render(run: int | None) -> None:
    st.header("Overview")
    st.caption(nav.SIGN_CONVENTION)
    runs = load("runs")
    st.subheader("Runs")
    if runs.height == 0:
        st.info("This database has no runs yet: `featuregraph ingest PROMPTS --db DB` adds one.")
        return
    st.dataframe(runs.select(RUN_COLUMNS), hide_index=True)
    with st.expander("SAEs of each run"):
        st.dataframe(load("run_saes"), hide_index=True)

    left, right = st.columns(2)
    with left:
        st.subheader("Prompts per tag")
        tags = load("prompts_per_tag")
        st.dataframe(tags, hide_index=True)
        if tags.height:
            st.bar_chart(tags.to_pandas(), x="tag", y="prompts", color="#4c78a8", horizontal=True, height=220)
    with right:
        st.subheader("Rows per table")
        st.dataframe(load("row_counts"), hide_index=True, height=420)
    st.subheader("Experiments")
    experiments = load("experiments")
    if experiments.height == 0:
        st.caption("No experiments yet (`featuregraph noise`, `validate`, `curve`).")
    else:
        st.dataframe(experiments, hide_index=True)
    st.caption(f"Schema version {load('schema_version')}.")
