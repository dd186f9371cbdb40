"""A prompt's causal graph as Graphviz DOT, drawn the way the method's figures draw it.

One box per feature, labelled with its name (``L.F``, ``L.att.F``, ...), showing the prompt's tokens shaded by the
feature's clean activation and the tokens whose probability ablating it raises and lowers
most. An arrow per edge: red when ablating the source suppresses the target (weight < 0),
blue when it promotes it (weight > 0), its opacity and width growing with |weight|.

Everything taken from the data is escaped here: HTML-like labels get XML entities (and no
control characters), quoted attributes get backslash escapes. Node ids are built from
integers only. Pure functions, no Streamlit: the tests read the DOT text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from featuregraph.store.models import SITE_SHORT, Node

RED = "#d62728"  # ablating the source suppresses the target
BLUE = "#1f77b4"  # ablating the source promotes the target
SHADE = (255, 127, 14)  # token shading by activation (orange: neither sign)
MIN_ALPHA, MAX_ALPHA = 0.15, 1.0
MIN_PEN, MAX_PEN = 0.8, 4.0
PATH_PEN = 6.0  # a highlighted path step, wider than any other arrow
PATH_FILL = "#fff3c4"  # the background of a highlighted feature's box
# Font sizes in points: the chart is drawn at its natural size (1 pt = 4/3 px), so 9 pt is 12 px,
# the smallest text on the page stays above 11 px.
FONT_PT, SMALL_FONT_PT = 11, 9
ELLIPSIS = "\u2026"

_VISIBLE = {"\n": "\u23ce", "\r": "\u240d", "\t": "\u21e5", " ": "\u00a0"}


@dataclass(frozen=True)
class TokenEffect:
    """A next token and ``dprob`` (ablated minus clean) of ablating a feature."""

    token: str
    dprob: float


@dataclass(frozen=True)
class NodeBox:
    """What one feature's box shows."""

    node: Node
    tokens: Sequence[str] = ()  # the prompt's tokens
    activations: Sequence[float] = ()  # the feature's clean activation at each (0: inactive)
    promoted: Sequence[TokenEffect] = ()  # ablation raises their probability (dprob > 0)
    suppressed: Sequence[TokenEffect] = ()  # ablation lowers it (dprob < 0)


@dataclass(frozen=True)
class GraphEdge:
    up: Node
    down: Node
    weight: float
    note: str = ""  # extra tooltip text (e.g. its signal against noise)
    highlight: bool = False  # a step of the path being followed: drawn thick, class "fg-path"


@dataclass(frozen=True)
class DrawOptions:
    max_tokens: int = 10  # tokens shown per box, around the feature's peak
    link: Callable[[Node], str] | None = None  # URL a click on a box opens
    rankdir: str = "TB"
    extra: dict = field(default_factory=dict)
    highlight: frozenset = frozenset()  # nodes of the path being followed: framed, class "fg-path"


def node_id(node: Node) -> str:
    """A DOT identifier made only of digits, letters and underscores: ``n5_12`` for the residual
    feature 5.12, ``n5_att_12`` for 5.att.12."""
    site, index = node.site_kind, node.index
    infix = "" if site == "resid" else f"{SITE_SHORT[site]}_"
    return f"n{int(node.layer)}_{infix}{int(index)}"


def visible_token(text: str) -> str:
    """A token as it should read inside a box: spaces kept, newlines and tabs shown as symbols,
    other control characters dropped; an empty token as ``∅``."""
    out = "".join(_VISIBLE.get(c, c) for c in text if c in _VISIBLE or (ord(c) >= 32 and ord(c) != 127))
    return out or "\u2205"


def html_escape(text: str) -> str:
    """Text for an HTML-like label: XML entities for the five special characters."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&#39;")
    )


def quote(text: str) -> str:
    """A DOT double-quoted string (backslashes and quotes escaped, no raw newlines)."""
    safe = "".join(c if ord(c) >= 32 else " " for c in text)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def shade(fraction: float) -> str:
    """The token background for an activation ``fraction`` of the feature's peak (solid colour)."""
    f = min(max(fraction, 0.0), 1.0)
    return _hex(tuple(round(255 + (c - 255) * f) for c in SHADE))


def edge_color(weight: float, max_abs: float) -> tuple[str, float]:
    """``(#RRGGBBAA, penwidth)``: red for weight < 0, blue for > 0, opacity by |weight|."""
    frac = min(abs(weight) / max_abs, 1.0) if max_abs > 0 else 1.0
    alpha = MIN_ALPHA + (MAX_ALPHA - MIN_ALPHA) * frac
    base = RED if weight < 0 else BLUE
    return f"{base}{round(alpha * 255):02x}", MIN_PEN + (MAX_PEN - MIN_PEN) * frac


def token_window(activations: Sequence[float], max_tokens: int) -> tuple[int, int]:
    """``[start, stop)``: at most ``max_tokens`` positions around the peak activation,
    ending at the last token when the peak is near it."""
    n = len(activations)
    if n <= max_tokens:
        return 0, n
    peak = max(range(n), key=lambda i: (activations[i], i))
    start = min(max(peak - max_tokens // 2, 0), n - max_tokens)
    return start, start + max_tokens


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def box_label(box: NodeBox, max_tokens: int, highlight: bool = False) -> str:
    """The HTML-like label (without the outer ``<`` ``>``) of one feature's box; ``highlight``
    frames it thick on a pale fill (a node of the path being followed)."""
    peak = max(box.activations, default=0.0)
    rows = [
        f'<TR><TD ALIGN="LEFT"><B>{html_escape(str(box.node))}</B>'
        f'<FONT POINT-SIZE="{SMALL_FONT_PT}" COLOR="#666666">  peak {_fmt(peak)}</FONT></TD></TR>'
    ]
    if box.tokens:
        start, stop = token_window(box.activations, max_tokens)
        cells = []
        if start > 0:
            cells.append(f"<TD>{ELLIPSIS}</TD>")
        for tok, act in zip(box.tokens[start:stop], box.activations[start:stop], strict=True):
            fraction = act / peak if peak > 0 else 0.0
            cells.append(f'<TD BGCOLOR="{shade(fraction)}">{html_escape(visible_token(tok))}</TD>')
        if stop < len(box.tokens):
            cells.append(f"<TD>{ELLIPSIS}</TD>")
        rows.append(
            '<TR><TD><TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="1"><TR>'
            + "".join(cells)
            + "</TR></TABLE></TD></TR>"
        )
    for mark, color, effects in (("\u25b2", BLUE, box.promoted), ("\u25bc", RED, box.suppressed)):
        if effects:
            words = " ".join(html_escape(visible_token(e.token)) for e in effects)
            rows.append(f'<TR><TD ALIGN="LEFT"><FONT COLOR="{color}">{mark} {words}</FONT></TD></TR>')
    frame = (
        f'BORDER="3" COLOR="#111111" BGCOLOR="{PATH_FILL}"' if highlight else 'BORDER="1" COLOR="#444444" BGCOLOR="#ffffff"'
    )
    return (
        f'<TABLE {frame} CELLBORDER="0" CELLSPACING="0" CELLPADDING="2">'
        + "".join(rows)
        + "</TABLE>"
    )


def build_dot(
    edges: Sequence[GraphEdge], boxes: dict[Node, NodeBox], options: DrawOptions = DrawOptions()
) -> str:
    """DOT source for ``edges``; features without an entry in ``boxes`` get a bare box."""
    nodes = sorted({e.up for e in edges} | {e.down for e in edges})
    max_abs = max((abs(e.weight) for e in edges), default=0.0)
    lines = [
        "digraph featuregraph {",
        f'  graph [rankdir={options.rankdir}, bgcolor="transparent", nodesep=0.25, ranksep=0.45];',
        f'  node [shape=plaintext, fontname="Helvetica", fontsize={FONT_PT}, margin=0];',
        '  edge [arrowsize=0.6, fontname="Helvetica"];',
    ]
    # One rank per site in forward order (res L, att L, mlp/tc L, res L+1): an edge between
    # two sites of one layer still points down the drawing.
    for layer, rank in sorted({n.forward_key for n in nodes}):
        members = " ".join(node_id(n) for n in nodes if n.forward_key == (layer, rank))
        name = f"layer_{int(layer)}" + (f"_{rank}" if rank else "")
        lines.append(f"  subgraph {name} {{ rank=same; {members}; }}")
    for n in nodes:
        box = boxes.get(n, NodeBox(n))
        on_path = n in options.highlight
        attrs = [f"label=<{box_label(box, options.max_tokens, on_path)}>", f"tooltip={quote(f'feature {n}')}"]
        if on_path:
            attrs.append('class="fg-path"')
        if options.link is not None:
            attrs += [f"URL={quote(options.link(n))}", 'target="_self"']
        lines.append(f"  {node_id(n)} [{', '.join(attrs)}];")
    for e in edges:
        color, pen = edge_color(e.weight, max_abs)
        effect = "suppresses" if e.weight < 0 else "promotes"
        tip = f"{e.up} -> {e.down}: weight {e.weight:+.4g} (ablating {e.up} {effect} {e.down})"
        if e.note:
            tip += f"; {e.note}"
        extra = ""
        if e.highlight:  # opaque whatever its |weight|: a weak step of the path must still show
            color, pen, tip = color[:7] + "ff", PATH_PEN, tip + " (on the path)"
            extra = ', class="fg-path", arrowsize=1.0'
        lines.append(
            f"  {node_id(e.up)} -> {node_id(e.down)} "
            f'[color="{color}", penwidth={pen:.2f}, tooltip={quote(tip)}, edgetooltip={quote(tip)}{extra}];'
        )
    lines.append("}")
    return "\n".join(lines)


__all__ = [
    "BLUE",
    "RED",
    "DrawOptions",
    "GraphEdge",
    "NodeBox",
    "TokenEffect",
    "box_label",
    "build_dot",
    "edge_color",
    "html_escape",
    "node_id",
    "quote",
    "shade",
    "token_window",
    "visible_token",
]
