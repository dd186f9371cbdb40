"""Pages and where the dashboard is: the URL's query parameters are the address.

``?page=feature&feature=5.10603&run=1`` opens a feature's page; links inside the graph and the
tables use the same form, so any view can be bookmarked or shared. Widgets that hold part of
the address are bound to a query parameter: they start from it, and write it back when the
user changes them. :func:`navigate` (a button callback) moves to another page.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence
from urllib.parse import urlencode

import streamlit as st

PAGES: dict[str, str] = {
    "overview": "Overview",
    "graph": "Prompt graph",
    "paths": "Recurring paths",
    "feature": "Feature",
    "noise": "Noise & validation",
    "sql": "SQL console",
}
PAGE_KEY = "nav_page"
SIGN_CONVENTION = (
    "Sign convention: **ablated minus clean**. A negative effect (red) means ablating the source "
    "suppresses the target; a positive one (blue) means ablating it promotes the target."
)


def widget_key(param: str) -> str:
    return f"qp_{param}"


def param(name: str, default: str | None = None) -> str | None:
    return st.query_params.get(name, default)


def int_param(name: str, default: int | None = None) -> int | None:
    value = st.query_params.get(name)
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def typed_param(name: str, cast: Callable[[str], Any]) -> Any:
    """``?name=`` read as ``cast`` (int, float, str); None when absent or unreadable, so that a
    hand-edited URL falls back to the form's default instead of failing."""
    value = st.query_params.get(name)
    if value is None:
        return None
    try:
        return cast(value)
    except ValueError:
        return None


def remember(values: dict[str, Any]) -> None:
    """Write a page's filters to the URL (None removes one), so that the view can be bookmarked."""
    for name, value in values.items():
        set_param(name, value)


def set_param(name: str, value: Any) -> None:
    if value is None or value == "":
        if name in st.query_params:
            del st.query_params[name]
    else:
        st.query_params[name] = str(value)


def href(page: str, **params: Any) -> str:
    """A relative link to ``page`` with ``params`` (None values left out)."""
    query = {"page": page, **{k: v for k, v in params.items() if v is not None}}
    return "?" + urlencode({k: str(v) for k, v in query.items()})


def navigate(page: str, **params: Any) -> None:
    """Go to ``page`` with ``params`` (use as an ``on_click`` callback)."""
    st.session_state[PAGE_KEY] = page
    set_param("page", page)
    for name, value in params.items():
        set_param(name, value)
        st.session_state.pop(widget_key(name), None)  # the bound widget starts again from the URL


def current_page() -> str:
    """The page radio in the sidebar, bound to ``?page=``."""
    if PAGE_KEY not in st.session_state:
        wanted = param("page", "overview")
        st.session_state[PAGE_KEY] = wanted if wanted in PAGES else "overview"
    page = st.sidebar.radio(
        "Page",
        list(PAGES),
        format_func=PAGES.get,
        key=PAGE_KEY,
        on_change=lambda: set_param("page", st.session_state[PAGE_KEY]),
    )
    set_param("page", page)
    return page


def _sync(name: str, to_text: Callable[[Any], Any] = lambda v: v) -> Callable[[], None]:
    return lambda: set_param(name, to_text(st.session_state[widget_key(name)]))


def bound_text(label: str, name: str, default: str = "", **kwargs: Any) -> str:
    key = widget_key(name)
    if key not in st.session_state:
        st.session_state[key] = param(name, default) or ""
    return st.text_input(label, key=key, on_change=_sync(name), **kwargs)


def bound_select(
    label: str,
    name: str,
    options: Sequence[Any],
    default: Any = None,
    format_func: Callable[[Any], str] = str,
    container: Any = st,
    **kwargs: Any,
) -> Any:
    """A selectbox over ``options`` bound to ``?name=`` (matched by ``str(option)``)."""
    key = widget_key(name)
    options = list(options)
    if not options:
        return None
    if key not in st.session_state or st.session_state[key] not in options:
        wanted = param(name)
        by_text = {str(o): o for o in options}
        st.session_state[key] = by_text.get(wanted, default if default in options else options[0])
    return container.selectbox(
        label, options, key=key, format_func=format_func, on_change=_sync(name), **kwargs
    )


def bound_radio(label: str, name: str, options: dict[str, str]) -> str:
    """A horizontal radio over ``options`` (value -> label) bound to ``?name=``: pages split in
    sections draw (and query) only the section shown."""
    key = widget_key(name)
    if key not in st.session_state or st.session_state[key] not in options:
        wanted = param(name)
        st.session_state[key] = wanted if wanted in options else next(iter(options))
    return st.radio(
        label, list(options), format_func=options.get, key=key, on_change=_sync(name), horizontal=True,
        label_visibility="collapsed",
    )  # fmt: skip


__all__ = [
    "PAGES",
    "SIGN_CONVENTION",
    "bound_radio",
    "bound_select",
    "bound_text",
    "current_page",
    "href",
    "int_param",
    "navigate",
    "param",
    "remember",
    "set_param",
    "typed_param",
    "widget_key",
]


def page_intro(title: str, run: int | None, caption: str = SIGN_CONVENTION) -> bool:
    """A page's header and caption; False, with a note, when the database has no run to show."""
    st.header(title)
    st.caption(caption)
    if run is None:
        st.info("This database has no runs yet.")
        return False
    return True
