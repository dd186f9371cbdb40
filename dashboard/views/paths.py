"""Recurring paths: the query layer's recurring-path search, and the prompts behind a path."""

from __future__ import annotations

import polars as pl
import streamlit as st

from featuregraph.dashboard import nav
from featuregraph.dashboard.data import load

ANY = "(any)"
SORTS = {
    "support": ("support", True),
    "strength": ("min_abs_mean_weight", True),
    "start layer": ("start_layer", False),
}
SIGN_TEXT = {1: "+", -1: "-"}


def _layers(run: int) -> list[int]:
    return sorted(load("run_saes", run)["layer"].to_list())


def _form(run: int, layers: list[int], tags: list[str]) -> dict | None:
    max_edges = max(min(len(layers) - 1, 6), 2)
    runs = load("runs")
    prompts = runs.filter(pl.col("run_id") == run)["prompts_done"].sum()
    # A tenth of the prompts: on dense runs (many active features per token, like the demo's) a
    # lower bar leaves too many candidate edges for the search to be quick, or even allowed.
    default_support = max(2, int(prompts) // 10)
    with st.form("paths_form"):
        cols = st.columns(4)
        n_edges = cols[0].slider("Edges per path", 2, 6, min(3, max_edges), key="paths_n_edges")
        min_support = cols[1].number_input(
            "Minimum support (prompts)", 2, value=default_support, step=1, key="paths_support",
            help="Prompts the whole path must occur in. Default: 10% of the run's prompts (at least 2), which keeps "
            "the search fast; lower it to find rarer paths.",
        )  # fmt: skip
        min_weight = cols[2].number_input(
            "Minimum |weight| on every edge",
            0.0,
            value=0.0,
            step=0.001,
            format="%.4f",
            key="paths_min_weight",
        )
        limit = cols[3].number_input("Paths at most", 1, 10_000, 200, step=50, key="paths_limit")
        cols = st.columns(4)
        layer_opts = [ANY, *layers]
        min_layer = cols[0].selectbox("From layer", layer_opts, key="paths_min_layer")
        max_layer = cols[1].selectbox("To layer", layer_opts, key="paths_max_layer")
        signs = cols[2].text_input(
            "Sign pattern", key="paths_signs", placeholder="e.g. +-* (blank: any)",
            help="One character per edge: - ablating the source suppresses the target, + promotes it, * either.",
        )  # fmt: skip
        tag = cols[3].selectbox("Prompt tag", [ANY, *tags], key="paths_tag")
        st.form_submit_button("Search")
    return {
        "n_edges": int(n_edges),
        "min_support": int(min_support),
        "run": run,
        "min_layer": None if min_layer == ANY else int(min_layer),
        "max_layer": None if max_layer == ANY else int(max_layer),
        "signs": signs.strip() or None,
        "min_weight": float(min_weight),
        "tag": None if tag == ANY else tag,
        "limit": int(limit),
    }


def _table(found: pl.DataFrame) -> pl.DataFrame:
    return found.with_columns(
        pl.col("signs").map_elements(lambda s: "".join(SIGN_TEXT[int(x)] for x in s), return_dtype=pl.String).alias("sign_pattern"),
        pl.col("mean_weights").list.eval(pl.element().abs()).list.min().alias("min_abs_mean_weight"),
        pl.col("mean_weights").list.eval(pl.element().round(5)),
    )  # fmt: skip


def _drill(run: int, path: str, signs: str, tag: str | None, min_weight: float) -> None:
    st.subheader(f"Prompts containing {path}")
    st.caption(f"Signs `{signs}` (ablated minus clean: `-` suppresses, `+` promotes). Weights in path order.")
    found = load("path_prompts", path, run, signs, min_weight, tag)
    if found.height == 0:
        st.info("No prompt contains this path with these filters.")
        return
    table = found.with_columns(
        pl.col("prompt_id").map_elements(lambda p: nav.href("graph", prompt=p, run=run), return_dtype=pl.String).alias("graph"),
        pl.col("weights").list.eval(pl.element().round(5)),
    ).select("graph", "prompt_id", "tag", "weights", "min_abs_weight", "text")  # fmt: skip
    st.dataframe(table, hide_index=True, column_config={
        "graph": st.column_config.LinkColumn("graph", display_text="open graph"),
    })  # fmt: skip
    nodes = [n.strip() for n in path.split("->")]
    cols = st.columns(2 + len(nodes))
    prompt_id = cols[0].selectbox("Prompt", found["prompt_id"].to_list(), key="paths_open_prompt")
    cols[1].button("Open its graph", on_click=nav.navigate, args=("graph",), kwargs={"prompt": prompt_id, "run": run},
                   key="paths_open_graph")  # fmt: skip
    for col, node in zip(cols[2:], nodes, strict=True):
        col.button(f"Feature {node}", on_click=nav.navigate, args=("feature",), kwargs={"feature": node, "run": run},
                   key=f"paths_feature_{node}")  # fmt: skip


def render(run: int | None) -> None:
    caption = "Chains of edges through consecutive layers with the same features and signs, found in many prompts. "
    if not nav.page_intro("Recurring paths", run, caption + nav.SIGN_CONVENTION):
        return
    layers = _layers(run)
    if len(layers) < 3:
        st.info(f"Paths of two or more edges need at least three SAE layers; this run has {len(layers)}.")
        return
    tags = [t for t in load("prompts_per_tag", run)["tag"].to_list() if t != "(none)"]
    params = _form(run, layers, tags)
    found = _table(load("recurring_paths", **params))
    if found.height == 0:
        st.info("No recurring path with these filters.")
        return
    left, right = st.columns([1, 3])
    sort = left.selectbox("Sort by", list(SORTS), key="paths_sort")
    column, descending = SORTS[sort]
    found = found.sort(column, descending=descending, maintain_order=True)
    cut = " (the limit: raise it to see more)" if found.height >= params["limit"] else ""
    right.markdown(f"**{found.height} paths**{cut}. Click a column header to sort the table.")
    st.dataframe(
        found.select("path", "sign_pattern", "support", "mean_weights", "min_abs_mean_weight", "start_layer"),
        hide_index=True,
        column_config={"mean_weights": st.column_config.ListColumn("mean weights")},
    )
    options = [
        f"{p}  [{s}]" for p, s in zip(found["path"].to_list(), found["sign_pattern"].to_list(), strict=True)
    ]
    chosen = nav.bound_select("Open a path", "path", options, format_func=lambda o: o)
    path, signs = chosen.rsplit("  [", 1)
    _drill(run, path, signs.rstrip("]"), params["tag"], params["min_weight"])
