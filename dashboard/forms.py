"""Filter widgets built from the table of query helpers (query/helpers.py).

A page asks for a helper's parameter by name; the label, help, starting value, bounds and kind
of widget come from the table, so the dashboard's forms and the ``featuregraph query`` options
say the same thing. A page passes ``value`` when it has a better start (from the URL, or from the data), and
``options`` for a ``select`` widget.
"""

from __future__ import annotations

from typing import Any, Sequence

import streamlit as st

from featuregraph.query.helpers import helper

ANY = "(any)"


def _number_kwargs(p: Any) -> dict[str, Any]:
    cast = p.type
    kwargs: dict[str, Any] = {}
    if p.minimum is not None:
        kwargs["min_value"] = cast(p.minimum)
    if p.maximum is not None:
        kwargs["max_value"] = cast(p.maximum)
    if p.step is not None:
        kwargs["step"] = cast(p.step)
    if p.type is float:
        kwargs["format"] = "%.4f"
    return kwargs


def widget(
    command: str,
    name: str,
    key: str,
    container: Any = st,
    value: Any = None,
    options: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Any:
    """The widget for parameter ``name`` of ``featuregraph query COMMAND``; returns its value
    (None for "(any)" in a select of an optional parameter, and for blank text)."""
    p = helper(command).param(name)
    start = p.start if value is None else value
    common = {"key": key, "help": p.help, **kwargs}
    if p.widget == "slider":
        return container.slider(p.label, p.type(p.minimum), p.type(p.maximum), p.type(start), **common)
    if p.widget == "select":
        choices = [ANY, *(options or [])] if p.optional else list(options or [])
        index = choices.index(start) if start in choices else 0
        chosen = container.selectbox(p.label, choices, index=index, **common)
        return None if chosen == ANY else chosen
    if p.widget == "text":
        text = container.text_input(p.label, "" if start is None else str(start), **common)
        return text.strip() or None
    return container.number_input(p.label, value=p.type(start), **_number_kwargs(p), **common)


__all__ = ["ANY", "widget"]
