"""The featuregraph dashboard (Streamlit). Start it with ``featuregraph dashboard DB``.

Reads the database read-only, one short connection per interaction (dashboard/data.py);
every query goes through the query layer (query/api.py and the page queries of query/overview.py,
prompts.py, features.py, noise.py); a table cut at the row cap says so at the top of the page.
"""

from __future__ import annotations

import streamlit as st

from featuregraph.dashboard import data, nav
from featuregraph.dashboard.views import feature, graph, noise, overview, paths, sql
from featuregraph.errors import DatabaseLockedError, FeaturegraphError
from featuregraph.query.rows import Truncation

VIEWS = {
    "overview": overview.render,
    "graph": graph.render,
    "paths": paths.render,
    "feature": feature.render,
    "noise": noise.render,
    "sql": sql.render,
}


def _run_select() -> int | None:
    runs = data.load("runs")
    if runs.height == 0:
        return None
    labels = {
        # The prompt count tells apart runs of one model (the demo's main run and its IOI mixed-site run).
        r["run_id"]: f"run {r['run_id']} ({r['n_prompts']} prompts, {r['status']}): {r['model']}"
        for r in runs.iter_rows(named=True)
    }
    return nav.bound_select(
        "Run", "run", list(labels), default=max(labels), format_func=labels.get, container=st.sidebar
    )


def cut_lines(cuts: list[tuple[str, Truncation]]) -> list[str]:
    """One line per query whose table the row cap cut: ``Path prompts: first N rows of M ...``."""
    lines = [
        f"{name.replace('_', ' ').capitalize()}: {cut.message()} (the dashboard's row cap)"
        for name, cut in cuts
    ]
    return list(dict.fromkeys(lines))


def main() -> None:
    st.set_page_config(page_title="featuregraph", layout="wide")
    try:
        path = data.database_path()
    except FeaturegraphError as exc:
        st.error(str(exc))
        return
    st.sidebar.title("featuregraph")
    st.sidebar.caption(f"`{path}` (read-only)")
    page = nav.current_page()
    with data.reader_scope(path):
        notices = st.container()  # at the top, filled once the page has run its queries
        try:
            run = _run_select()
            VIEWS[page](run)
        except DatabaseLockedError as exc:
            st.warning(f"An ingest is writing to this database right now; try again in a moment. ({exc})")
        except FeaturegraphError as exc:
            st.error(str(exc))
        for line in cut_lines(data.cuts()):
            notices.warning(line)
        if data.snapshot_note():
            notices.info(data.snapshot_note())
    st.sidebar.markdown(nav.SIGN_CONVENTION)


main()
