"""Noise and validation: effects in context against cross-context noise, path validation
against its control, response curves."""

from __future__ import annotations

import json

import altair as alt
import polars as pl
import streamlit as st

from featuregraph.dashboard import nav
from featuregraph.dashboard.data import load
from featuregraph.dashboard.render import histogram_lines
from featuregraph.dashboard.views.feature import curve_charts
from featuregraph.query.noise import HISTOGRAM_SAMPLE_ROWS
from featuregraph.query.validation import validation_lines


def _pick(run: int, kind: str, label: str) -> tuple[int, dict] | None:
    found = load("experiments", run, kind).filter(pl.col("status") == "complete")
    if found.height == 0:
        return None
    rows = {r["experiment_id"]: r for r in found.iter_rows(named=True)}
    chosen = st.selectbox(label, list(rows), key=f"noise_pick_{kind}", format_func=lambda i: f"{kind} #{i}")
    row = rows[chosen]
    with st.expander("Settings and summary"):
        st.json({"spec": json.loads(row["spec"]), "summary": json.loads(row["summary"] or "{}")})
    return chosen, row


def _noise(run: int) -> None:
    picked = _pick(run, "noise", "Noise experiment")
    if picked is None:
        st.info("No noise experiment for this run yet: `featuregraph noise DB --corpus CONTEXTS.txt`.")
        return
    experiment, row = picked
    spec = json.loads(row["spec"])
    st.caption(
        f"Every feature ablated in {spec.get('n_contexts')} unrelated contexts, read at every position. A stored "
        "effect's p-value is the share of those samples in which the feature's largest effect on anything was at "
        "least as large (a feature that never fires there has none). On prompts that are themselves unrelated "
        "text, about 1% should fall below 0.01: that row is the calibration check."
    )
    st.dataframe(load("significance_by_tag", run, experiment), hide_index=True)
    st.caption(
        f"Distributions: a random sample of {HISTOGRAM_SAMPLE_ROWS:,} of the run's stored effects in context, next "
        "to the noise floor of the feature that caused each (the 95th percentile of its largest effect across the "
        "noise samples). Effects well to the right of their noise floor are context-specific."
    )
    left, right = st.columns(2)
    with left:
        edges = load("edge_noise_histogram", run, experiment)
        if edges.height:
            st.altair_chart(
                histogram_lines(edges, "bin", "Edges: |weight|", "log10 |weight|"), width="stretch"
            )
    with right:
        logits = load("logit_noise_histogram", run, experiment)
        if logits.height:
            st.altair_chart(
                histogram_lines(logits, "bin", "Logit effects: |dprob|", "log10 |dprob|"), width="stretch"
            )
    scatter = load("feature_noise_scatter", run, experiment, 2000)
    if scatter.height:
        points = (
            alt.Chart(scatter.to_pandas(), title="Per feature: mean |weight| in context vs in noise")
            .mark_circle(size=30, opacity=0.6)
            .encode(
                x=alt.X("noise_max_median:Q", scale=alt.Scale(type="log"), title="noise median of the largest |weight|"),
                y=alt.Y(
                    "in_context_abs_mean:Q", scale=alt.Scale(type="log"), title="in-context mean |weight|"
                ),
                color="layer:N",
                tooltip=["feature", "sampled_edges", "in_context_abs_mean", "noise_max_median", "n_active"],
            )
            .properties(height=320)
        )
        st.altair_chart(points, width="stretch")


def _edges_vs_noise(run: int) -> None:
    picked = _pick(run, "noise", "Noise experiment")
    if picked is None:
        st.info("No noise experiment for this run yet: `featuregraph noise DB --corpus CONTEXTS.txt`.")
        return
    experiment, _row = picked
    st.caption(
        "Recurring signed edges against their own noise: z = (mean weight over the prompts - noise mean) / "
        "noise spread (the standard deviation of this pair's change over the noise samples; no z where it never "
        "changed)."
    )
    prompts = int(load("runs").filter(pl.col("run_id") == run)["prompts_done"].sum())
    min_prompts = st.number_input(
        "Recurring edges: seen in at least this many prompts", 2, value=max(2, prompts // 100), key="noise_min_prompts",
        help="Default: 1% of the run's prompts (at least 2); lower it to include rarer edges.",
    )  # fmt: skip
    best, z = load("recurring_edge_snr", run, experiment, int(min_prompts), 50, 20.0)
    if z.height == 0:
        st.info("No recurring edge with a noise figure at this threshold.")
        return
    bins = z.with_columns((pl.col("bin") + 0.5).alias("bin_end")).to_pandas()
    chart = (
        alt.Chart(bins, title="Recurring edges: |z| against noise (last bin: 20 and above)")
        .mark_bar(color="#ff7f0e")
        .encode(x=alt.X("bin:Q", bin="binned", title="|z|"), x2="bin_end:Q", y="n:Q", tooltip=["bin", "n"])
        .properties(height=260)
    )
    st.altair_chart(chart, width="stretch")
    st.markdown("**Furthest from their noise**")
    st.dataframe(best, hide_index=True)


def _validation(run: int) -> None:
    picked = _pick(run, "validation", "Validation experiment")
    if picked is None:
        st.info(
            "No validation experiment for this run yet: `featuregraph validate DB --path 1.2,2.3 --prompts NEW.jsonl`."
        )
        return
    experiment, row = picked
    spec, summary = json.loads(row["spec"]), json.loads(row["summary"] or "{}")
    st.caption(
        f"Path {' -> '.join(spec.get('features', []))} ablated jointly (c = {spec.get('coefficient')}) on new prompts, "
        f"next to a {spec.get('control')} control at the same sites and of the same size. Answer log-prob change: "
        "log p_ablated(answer) \u2212 log p_clean(answer); logit difference: answer against the clean run's most "
        "likely other token. Intervals: bootstrap 95% of the median over prompts; sign test: two-sided, exact."
    )
    for line in validation_lines(summary):
        (st.warning if line.startswith("warning:") else st.markdown)(line)
    cols = st.columns(4)
    lead = summary.get("answer_dlogp", {})
    for col, value, label in (
        (cols[0], lead.get("path", {}).get("median"), "answer log-prob change: path median"),
        (cols[1], lead.get("control", {}).get("median"), "answer log-prob change: control median"),
        (cols[2], summary.get("mean_total_variation_path"), "mean total variation: path"),
        (cols[3], summary.get("mean_total_variation_control"), "mean total variation: control"),
    ):
        if value is not None:
            col.metric(label, f"{value:.3g}")
    results = load("validation_results", experiment)
    if results.height == 0:
        return
    # Older experiments (before answer log-probs were stored) fall back to total variation.
    y = "answer_dlogp" if results["answer_dlogp"].null_count() < results.height else "total_variation"
    chart = (
        alt.Chart(results.to_pandas(), title=f"{y} per prompt")
        .mark_bar()
        .encode(
            x=alt.X("prompt_index:O", title="prompt"),
            xOffset="arm:N",
            y=alt.Y(f"{y}:Q"),
            color=alt.Color(
                "arm:N", scale=alt.Scale(domain=["path", "control"], range=["#ff7f0e", "#7f7f7f"])
            ),
            tooltip=["prompt_index", "arm", "features", "answer_dlogp", "total_variation", "inactive_features", "text"],
        )
    )
    st.altair_chart(chart, width="stretch")
    st.dataframe(results, hide_index=True)
    index = st.selectbox(
        "Tokens of prompt", results["prompt_index"].unique().sort().to_list(), key="noise_val_prompt"
    )
    st.dataframe(load("validation_tokens", experiment, int(index)), hide_index=True)


def _curves(run: int) -> None:
    picked = _pick(run, "curve", "Response curve")
    if picked is None:
        st.info(
            "No response curve for this run yet: `featuregraph curve DB --up L.F --down L+1.G --prompt TEXT`."
        )
        return
    experiment, row = picked
    spec = json.loads(row["spec"])
    st.caption(f"{spec.get('up')} \u2192 {spec.get('down') or '(logits only)'} on `{spec.get('prompt')}`; the "
               "upstream feature scaled by c (1 = clean, 0 = zero-ablated).")  # fmt: skip
    curve_charts(experiment, f"curve #{experiment}")


def render(run: int | None) -> None:
    if not nav.page_intro("Noise and validation", run):
        return
    sections = {
        "noise": "Effects vs noise",
        "edges": "Recurring edges vs noise",
        "validation": "Path validation",
        "curves": "Response curves",
    }
    section = nav.bound_radio("Section", "section", sections)
    {"noise": _noise, "edges": _edges_vs_noise, "validation": _validation, "curves": _curves}[section](run)
