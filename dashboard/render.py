"""Small pieces of HTML and charts shared by the pages (all text from the data escaped)."""

from __future__ import annotations

import html
from typing import Sequence

import altair as alt
import polars as pl

from featuregraph.dashboard.graph import BLUE, RED, SHADE, visible_token


def shaded_tokens(tokens: Sequence[str], activations: Sequence[float], peak: float | None = None) -> str:
    """A prompt as inline HTML, each token's background by its activation (fraction of ``peak``)."""
    top = peak if peak is not None else max(activations, default=0.0)
    spans = []
    for tok, act in zip(tokens, activations, strict=True):
        alpha = min(max(act / top, 0.0), 1.0) if top > 0 else 0.0
        title = html.escape(f"{act:.4g}", quote=True)
        spans.append(
            f'<span title="{title}" style="background: rgba({SHADE[0]},{SHADE[1]},{SHADE[2]},{alpha:.2f}); '
            f'border-radius: 2px; white-space: pre;">{html.escape(visible_token(tok))}</span>'
        )
    return (
        '<div style="font-family: monospace; line-height: 1.9; font-size: 0.9em;">'
        + "".join(spans)
        + "</div>"
    )


def signed_bars(frame: pl.DataFrame, label: str, value: str, title: str) -> alt.Chart:
    """Horizontal bars of ``value`` per ``label``: blue above zero, red below (ablated minus clean)."""
    data = frame.select(
        pl.col(label).map_elements(visible_token, return_dtype=pl.String).alias(label), value
    ).to_pandas()
    return (
        alt.Chart(data, title=title)
        .mark_bar()
        .encode(
            x=alt.X(f"{value}:Q"),
            y=alt.Y(f"{label}:N", sort="-x"),
            color=alt.condition(alt.datum[value] < 0, alt.value(RED), alt.value(BLUE)),
            tooltip=[label, value],
        )
    )


def histogram_lines(frame: pl.DataFrame, x: str, title: str, x_title: str) -> alt.Chart:
    """Per series, the fraction of its rows in each bin (so series of different sizes compare)."""
    data = frame.with_columns((pl.col("n") / pl.col("n").sum().over("series")).alias("fraction")).to_pandas()
    return (
        alt.Chart(data, title=title)
        .mark_line(point=True, interpolate="step-after")
        .encode(
            x=alt.X(f"{x}:Q", title=x_title),
            y=alt.Y("fraction:Q", title="fraction of rows"),
            color=alt.Color("series:N", scale=alt.Scale(range=["#ff7f0e", "#7f7f7f"])),
            tooltip=["series", x, "n", alt.Tooltip("fraction:Q", format=".3f")],
        )
    )


__all__ = ["histogram_lines", "shaded_tokens", "signed_bars"]
