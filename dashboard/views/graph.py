"""Prompt graph: one prompt's causal graph, drawn as in the method's figures."""

from __future__ import annotations

from collections import Counter

import polars as pl
import streamlit as st

from featuregraph.dashboard import nav
from featuregraph.dashboard.data import load
from featuregraph.dashboard.forms import widget
from featuregraph.dashboard.graph import DrawOptions, GraphEdge, NodeBox, TokenEffect, build_dot
from featuregraph.dashboard.views.graph_positions import draw_imported
from featuregraph.errors import FeaturegraphError
from featuregraph.query import api
from featuregraph.query.prompts import SNR_MEASURES
from featuregraph.store.models import Node

ANY = "(any)"
GRAPH = "prompt-graph"  # the helper of query/helpers.py behind the drawing
SNR_LABELS = {"z": "|z| vs noise", "ratio": "|w| / noise p95", "p": "-log10 p"}


def _prompt_label(row: dict) -> str:
    text = row["text"] if len(row["text"]) <= 80 else row["text"][:79] + "\u2026"
    tag = f" [{row['tag']}]" if row.get("tag") else ""
    return f"#{row['prompt_id']}{tag} {text}"


def pick_prompt(run: int) -> int | None:
    """Tag filter, text search and a prompt select bound to ``?prompt=``."""
    tags = load("prompts_per_tag", run)["tag"].to_list()
    left, right = st.columns([1, 2])
    tag = left.selectbox("Tag", [ANY, *tags], key="graph_tag")
    search = right.text_input(
        "Search prompt text", key="graph_search", placeholder="substring, case-insensitive"
    )
    found = load("find_prompts", run, search.strip() or None, None if tag == ANY else tag, 200)
    labels = {row["prompt_id"]: _prompt_label(row) for row in found.iter_rows(named=True)}
    wanted = nav.int_param("prompt")
    if wanted is not None and wanted not in labels:
        extra = load("prompt", run, wanted)
        if extra.height:
            labels = {wanted: _prompt_label(extra.row(0, named=True)), **labels}
    if not labels:
        st.info("No prompt matches.")
        return None
    if found.height == 200:
        st.caption("Showing the first 200 matching prompts: narrow the search to see others.")
    return nav.bound_select("Prompt", "prompt", list(labels), format_func=labels.get)


# The drawing's settings in the URL (name -> type): a graph can be bookmarked as it is drawn.
URL_SETTINGS = {"k": int, "min_path": int, "min_weight": float, "max_edges": int, "noise": int, "measure": str,
                "min_snr": float}  # fmt: skip
MAX_EDGES = (5, 300, 30)  # the "edges drawn" slider: bounds and start
UNSHRUNK_CHART = (
    "<style>.stGraphVizChart { overflow-x: auto; } .stGraphVizChart svg { max-width: none !important; }</style>"
)


def _controls(run: int) -> dict:
    url = {name: nav.typed_param(name, cast) for name, cast in URL_SETTINGS.items()}
    cols = st.columns(4)
    low, high, start = MAX_EDGES
    opts = {
        "k": widget(GRAPH, "k", "graph_k", cols[0], value=url["k"]),
        "min_path": widget(GRAPH, "min_path", "graph_min_path", cols[1], value=url["min_path"]),
        "min_weight": widget(GRAPH, "min_weight", "graph_min_weight", cols[2], value=url["min_weight"]),
        "max_edges": cols[3].slider("Edges drawn at most", low, high, min(max(url["max_edges"] or start, low), high),
                                    key="graph_max_edges"),
    }  # fmt: skip
    noise = load("experiments", run, "noise").filter(pl.col("status") == "complete")
    opts["experiment"], opts["min_snr"], opts["measure"] = None, 0.0, "z"
    if noise.height:
        cols = st.columns(4)
        ids = noise["experiment_id"].to_list()
        opts["experiment"] = cols[0].selectbox(
            "Noise experiment", ids, format_func=lambda i: f"noise #{i}", key="graph_noise",
            index=ids.index(url["noise"]) if url["noise"] in ids else 0,
        )  # fmt: skip
        measures = list(SNR_MEASURES)
        opts["measure"] = cols[1].radio(
            "Signal-to-noise", measures, format_func=SNR_LABELS.get, key="graph_measure", horizontal=True,
            help="; ".join(f"{SNR_LABELS[k]}: {v}" for k, v in SNR_MEASURES.items()),
            index=measures.index(url["measure"]) if url["measure"] in measures else 0,
        )  # fmt: skip
        opts["min_snr"] = cols[2].number_input(
            "Minimum signal-to-noise", min_value=0.0, value=max(url["min_snr"] or 0.0, 0.0), step=0.5,
            key="graph_min_snr",
            help="0 keeps every edge (and shows no noise figures); above 0, edges below it or without a noise "
            "figure are dropped, and the edge table shows each edge's z and |w| / noise p95.",
        )  # fmt: skip
    else:
        st.caption(
            "No noise experiment for this run yet (`featuregraph noise DB --corpus ...`): no signal-to-noise filter."
        )
    nav.remember({"k": opts["k"], "min_path": opts["min_path"], "min_weight": opts["min_weight"],
                  "max_edges": opts["max_edges"], "noise": opts["experiment"],
                  "measure": opts["measure"] if noise.height else None,
                  "min_snr": opts["min_snr"] or None})  # fmt: skip
    return opts


def followed_path(run: int, prompt_id: int) -> list[GraphEdge]:
    """The steps of ``?path=`` (with ``?signs=``) in this prompt, highlighted; none (with a note)
    when the URL names no path, a malformed one, or one this prompt does not contain."""
    path, signs = nav.param("path"), nav.param("signs")
    if not path:
        return []
    try:
        nodes = api.parse_path(path)
        found = load("path_prompts", path, run, signs, 0.0, None)
    except FeaturegraphError as exc:
        st.warning(f"Path in the URL not shown: {exc}")
        return []
    row = found.filter(pl.col("prompt_id") == prompt_id)
    if row.height == 0:
        st.warning(f"Prompt #{prompt_id} does not contain the path {path}" + (f" [{signs}]" if signs else "") + ".")
        return []
    weights = row["weights"][0]
    st.markdown(f"Following the path **{path}** (thick arrows, framed boxes), drawn whatever the settings below "
                f"prune. [Stop following it]({nav.href('graph', prompt=prompt_id, run=run)})")  # fmt: skip
    return [GraphEdge(a, b, float(w), highlight=True) for a, b, w in zip(nodes[:-1], nodes[1:], weights, strict=True)]


def _boxes(run: int, prompt_id: int, nodes: list[Node]) -> dict[Node, NodeBox]:
    names = tuple(str(n) for n in nodes)
    tokens = load("prompt_tokens", run, prompt_id)["token"].to_list()
    acts = load("node_activations", run, prompt_id, names)
    logits = load("node_logits", run, prompt_id, names, top=3)
    per_node: dict[Node, list[float]] = {n: [0.0] * len(tokens) for n in nodes}
    for layer, feature, position, act in acts.select(
        "layer", "feature", "position", "activation"
    ).iter_rows():
        values = per_node.get(Node(layer, feature))
        if values is not None and 0 <= position < len(values):
            values[position] = float(act)
    effects: dict[tuple[Node, str], list[TokenEffect]] = {}
    for row in logits.iter_rows(named=True):
        token = row["token"] if row["token"] is not None else f"<{row['token_id']}>"
        effects.setdefault((Node(row["layer"], row["feature"]), row["direction"]), []).append(
            TokenEffect(token, float(row["dprob"]))
        )
    return {
        n: NodeBox(
            n, tokens, per_node[n], effects.get((n, "promoted"), ()), effects.get((n, "suppressed"), ())
        )
        for n in nodes
    }


def _note(row: dict) -> str:
    parts = []
    if row.get("z_score") is not None:
        parts.append(f"z {row['z_score']:+.3g}")
    if row.get("noise_ratio") is not None:
        parts.append(f"|w|/noise p95 {row['noise_ratio']:.3g}")
    if row.get("p_value") is not None:
        parts.append(f"p {row['p_value']:.2g}")
    return ", ".join(parts)


def render(run: int | None) -> None:
    if not nav.page_intro("Prompt graph", run):
        return
    prompt_id = pick_prompt(run)
    if prompt_id is None:
        return
    steps = followed_path(run, prompt_id)
    opts = _controls(run)
    info = load("prompt", run, prompt_id).row(0, named=True)
    st.markdown(f"**Prompt #{prompt_id}** ({info['n_tokens']} tokens, {info['n_ablations']} ablations"
                + (f", tag `{info['tag']}`" if info["tag"] else "") + ")")  # fmt: skip

    # noise figures only when filtering by them: the edge_snr join scans every noise edge
    graph = load(
        "prompt_graph_snr",
        prompt_id,
        run,
        opts["k"],
        opts["min_path"],
        opts["min_weight"],
        opts["experiment"] if opts["min_snr"] > 0 else None,
        opts["min_snr"],
        opts["measure"],
    )  # fmt: skip
    draw_imported(run, prompt_id)  # an imported graph's per-position nodes, when the prompt is one
    text_col, top_col = st.columns([3, 2])
    with text_col:
        st.code(info["text"], language=None, wrap_lines=True)
    with top_col:
        top = load("top_next_tokens", run, prompt_id)
        if top.height:
            st.markdown("**Clean top next tokens**")
            st.dataframe(top.select("rank", "token", "prob"), hide_index=True, height=180, column_config={
                "prob": st.column_config.ProgressColumn("prob", format="%.3f", min_value=0.0, max_value=1.0)
            })  # fmt: skip
        else:
            st.caption("No clean top next tokens stored.")
    if graph.height == 0 and not steps:
        st.info(
            "No edges left with these settings: lower the minimum path length, |weight| or signal-to-noise."
        )
        return
    total = graph.height
    drawn = graph.sort(pl.col("weight").abs(), descending=True).head(opts["max_edges"])
    on_path = {(e.up, e.down) for e in steps}
    edges = steps + [
        GraphEdge(Node(r["up_layer"], r["up_feature"]), Node(r["down_layer"], r["down_feature"]), float(r["weight"]), _note(r))
        for r in drawn.iter_rows(named=True)
        if (Node(r["up_layer"], r["up_feature"]), Node(r["down_layer"], r["down_feature"])) not in on_path
    ]  # fmt: skip
    nodes = sorted({e.up for e in edges} | {e.down for e in edges})
    boxes = _boxes(run, prompt_id, nodes)
    widest = max(Counter(n.forward_key for n in nodes).values())
    rankdir = "LR" if widest > 2 * len({n.forward_key for n in nodes}) + 2 else "TB"
    link = lambda n: nav.href("feature", feature=str(n), run=run)  # noqa: E731
    highlight = frozenset(n for e in steps for n in (e.up, e.down))
    # drawn at its natural size, a wide graph scrolling sideways, so that text keeps its size (see
    # graph.FONT_PT): Streamlit would otherwise shrink the drawing to the column's width
    st.markdown(UNSHRUNK_CHART, unsafe_allow_html=True)
    st.graphviz_chart(build_dot(edges, boxes, DrawOptions(link=link, rankdir=rankdir, highlight=highlight)),
                      width="content")
    cut = f"The {drawn.height} strongest of {total} edges" if total > drawn.height else f"{total} edges"
    if steps:
        cut += f" (and the path's {len(steps)})"
    st.caption(
        f"{cut}, {len(nodes)} features. Arrows: red = ablating the source suppresses the target, blue = it "
        "promotes it; opacity and width by |weight|. Boxes: tokens shaded by the feature's clean activation; "
        "\u25b2 tokens whose probability ablating the feature raises most, \u25bc lowers most. "
        "Click a box to open the feature's page."
    )
    names = [str(n) for n in nodes]
    left, right = st.columns([2, 1])
    chosen = left.selectbox("Feature", names, key="graph_open_feature")
    right.button("Open feature page", on_click=nav.navigate, args=("feature",),
                 kwargs={"feature": chosen, "run": run}, key="graph_open_button")  # fmt: skip
    with st.expander(f"Edges ({total})"):
        st.dataframe(
            graph.select("up", "down", "weight", "edge_rank", "path_len", "p_value", "z_score", "noise_ratio"),
            hide_index=True,
        )
