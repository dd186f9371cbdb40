"""Recurring paths: the query layer's recurring-path search, and the prompts behind a path."""

from __future__ import annotations

import polars as pl
import streamlit as st

from featuregraph.dashboard import nav
from featuregraph.dashboard.data import load
from featuregraph.dashboard.forms import widget
from featuregraph.query.api import RANKINGS
from featuregraph.query.helpers import P_VALUE_CHOICES

RECURRING = "paths"  # the helper of query/helpers.py behind the search
SPECIFIC = "tag-specific"  # ... and behind the task-specificity table
SORTS = {
    "support": ("support", True),
    "strength": ("strength", True),
    "start layer": ("start_layer", False),
}
SIGN_TEXT = {1: "+", -1: "-"}


def _layers(run: int) -> list[int]:
    """One entry per SAE site of the run, by layer (a layer with a residual and an attention SAE
    appears twice: a path can step through both)."""
    return sorted(load("run_saes", run)["layer"].to_list())


def _noise_experiments(run: int) -> list[int]:
    found = load("experiments", run, "noise")
    return found.filter(pl.col("status") == "complete")["experiment_id"].to_list()


def _strength(command: str, prefix: str, run: int, url: dict | None = None, cols: list | None = None) -> dict:
    """The strength filters of a path search (relative weight, p-value, noise experiment)."""
    url = url or {}
    cols = cols or st.columns(3)
    max_p = widget(command, "max_p", f"{prefix}_max_p", cols[1], options=list(P_VALUE_CHOICES), value=url.get("max_p"))
    experiment = widget(command, "experiment", f"{prefix}_experiment", cols[2], options=_noise_experiments(run),
                        value=url.get("experiment"))  # fmt: skip
    return {
        "min_rel_weight": widget(command, "min_rel_weight", f"{prefix}_min_rel_weight", cols[0],
                                 value=url.get("min_rel_weight")),
        "max_p": max_p,
        "experiment": experiment if max_p is not None else None,  # the experiment only serves the p-value
    }


# The search's filters in the URL (name -> type), under the helper's parameter names.
URL_FILTERS = {"n_edges": int, "min_support": int, "top": int, "rank_by": str, "min_weight": float,
               "min_layer": int, "max_layer": int, "signs": str, "tag": str, "min_rel_weight": float,
               "max_p": float, "experiment": int}  # fmt: skip


def _form(run: int, layers: list[int], tags: list[str]) -> dict:
    """The search's filters: labels, help, starting values and bounds from the helper table,
    started from the URL where it has them and written back to it."""
    url = {name: nav.typed_param(name, cast) for name, cast in URL_FILTERS.items()}
    max_edges = max(min(len(layers) - 1, 6), 2)
    with st.form("paths_form"):
        cols = st.columns(4)
        params = {
            "n_edges": widget(RECURRING, "n_edges", "paths_n_edges", cols[0],
                              value=min(url["n_edges"] or 3, max_edges)),
            "min_support": widget(RECURRING, "min_support", "paths_support", cols[1], value=url["min_support"]),
            "top": widget(RECURRING, "top", "paths_top", cols[2], value=url["top"]),
            "rank_by": widget(RECURRING, "rank_by", "paths_rank_by", cols[3], value=url["rank_by"],
                              options=list(RANKINGS)),
        }  # fmt: skip
        cols = st.columns(4)
        params["min_layer"] = widget(RECURRING, "min_layer", "paths_min_layer", cols[0], options=sorted(set(layers)),
                                     value=url["min_layer"])  # fmt: skip
        params["max_layer"] = widget(RECURRING, "max_layer", "paths_max_layer", cols[1], options=sorted(set(layers)),
                                     value=url["max_layer"])  # fmt: skip
        params["signs"] = widget(
            RECURRING, "signs", "paths_signs", cols[2], placeholder="e.g. +-* (blank: any)", value=url["signs"]
        )
        params["tag"] = widget(RECURRING, "tag", "paths_tag", cols[3], options=tags, value=url["tag"])
        cols = st.columns(4)
        params["min_weight"] = widget(RECURRING, "min_weight", "paths_min_weight", cols[0], value=url["min_weight"])
        params.update(_strength(RECURRING, "paths", run, url, cols[1:]))
        st.caption(
            "The top paths are exact at any minimum support (down to 2 prompts): the search raises its own "
            "threshold to the support the top-th path must reach, so a low minimum stays fast. Ties at the cut go "
            "to the lower run, then the lower nodes (layer, feature) in order. Ranking by strength (the smallest "
            "|mean weight| along the path) searches every path that reaches the minimum support: raise it on dense "
            "runs. Support counts a prompt only where every edge passes the strength filters (by default |weight| "
            ">= a tenth of its ablation's largest); support_any counts it without them."
        )
        st.form_submit_button("Search")
    nav.remember(params)
    return {**params, "run": run}


def _table(found: pl.DataFrame) -> pl.DataFrame:
    return found.with_columns(
        pl.col("signs").map_elements(lambda s: "".join(SIGN_TEXT[int(x)] for x in s), return_dtype=pl.String).alias("sign_pattern"),
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
        pl.col("prompt_id").map_elements(lambda p: nav.href("graph", prompt=p, run=run, path=path, signs=signs),
                                         return_dtype=pl.String).alias("graph"),
        pl.col("weights").list.eval(pl.element().round(5)),
    ).select("graph", "prompt_id", "tag", "weights", "min_abs_weight", "text")  # fmt: skip
    st.dataframe(table, hide_index=True, column_config={
        "graph": st.column_config.LinkColumn("graph", display_text="graph, path highlighted"),
    })  # fmt: skip
    nodes = [n.strip() for n in path.split("->")]
    cols = st.columns(2 + len(nodes))
    prompt_id = cols[0].selectbox("Prompt", found["prompt_id"].to_list(), key="paths_open_prompt")
    cols[1].button("Open its graph", on_click=nav.navigate, args=("graph",),
                   kwargs={"prompt": prompt_id, "run": run, "path": path, "signs": signs},
                   key="paths_open_graph")  # fmt: skip
    for col, node in zip(cols[2:], nodes, strict=True):
        col.button(f"Feature {node}", on_click=nav.navigate, args=("feature",), kwargs={"feature": node, "run": run},
                   key=f"paths_feature_{node}")  # fmt: skip


def render(run: int | None) -> None:
    caption = (
        "Chains of edges (a step may skip layers) with the same features and signs, found in many prompts; "
        "open one to list its prompts, each linked to its graph with the path highlighted. "
    )
    if not nav.page_intro("Recurring paths", run, caption + nav.SIGN_CONVENTION):
        return
    layers = _layers(run)
    if len(layers) < 3:
        st.info(f"Paths of two or more edges need at least three SAE sites; this run has {len(layers)}.")
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
    cut = " (the top asked for: raise it to see more)" if found.height >= params["top"] else ""
    right.markdown(f"**{found.height} paths**{cut}. Click a column header to sort the table.")
    st.dataframe(
        found.select("path", "sign_pattern", "support", "support_any", "mean_weights", "strength", "start_layer"),
        hide_index=True,
        column_config={"mean_weights": st.column_config.ListColumn("mean weights")},
    )
    options = [
        f"{p}  [{s}]" for p, s in zip(found["path"].to_list(), found["sign_pattern"].to_list(), strict=True)
    ]
    # ?open= (not ?path=, which the graph page follows)
    chosen = nav.bound_select("Open a path", "open", options, format_func=lambda o: o)
    path, signs = chosen.rsplit("  [", 1)
    _drill(run, path, signs.rstrip("]"), params["tag"], params["min_weight"])
    if tags:
        _specific(run, tags)


def _specific(run: int, tags: list[str]) -> None:
    """The paths most specific to one tag: share of the tag's prompts minus the largest share elsewhere.
    Ranked on request (the Rank button, or ``?specific=TAG`` in the URL): it scores chains in every
    tag, seconds on a large run, and the page should open without waiting for it."""
    st.subheader("Paths specific to a tag")
    wanted = nav.param("specific")
    with st.form("specific_form"):
        cols = st.columns(4)
        params = {
            "tag": widget(SPECIFIC, "tag", "specific_tag", cols[0], options=tags, value=wanted),
            "n_edges": widget(SPECIFIC, "n_edges", "specific_n_edges", cols[1]),
            "min_support": widget(SPECIFIC, "min_support", "specific_support", cols[2]),
            "top": widget(SPECIFIC, "top", "specific_top", cols[3]),
            **_strength(SPECIFIC, "specific", run),
        }
        if st.form_submit_button("Rank"):
            nav.set_param("specific", params["tag"])
    if nav.param("specific") is None:
        st.caption("Pick a tag and press Rank.")
        return
    found = load("tag_specific_paths", **params, run=run)
    if found.height == 0:
        st.info(f"No path recurs in tag {params['tag']} with these filters.")
        return
    st.dataframe(
        _table(found).select("path", "sign_pattern", "specificity", "support", "support_any", "share", "other_tag",
                             "other_share", "mean_weights"),
        hide_index=True,
    )  # fmt: skip
