"""The featuregraph dashboard (Streamlit). Start it with ``featuregraph dashboard DB``.

Reads the database read-only, one short connection per interaction (dashboard/data.py);
every query goes through the query layer (query/api.py, query/pages.py).
"""

from __future__ import annotations

import streamlit as st

from featuregraph.dashboard import data, nav
from featuregraph.dashboard.views import feature, graph, noise, overview, paths, sql
from featuregraph.errors import FeaturegraphError
from featuregraph.query.pages import DatabaseBusyError

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
        r["run_id"]: f"run {r['run_id']}: {r['model']} ({r['status']})" for r in runs.iter_rows(named=True)
    }
    return nav.bound_select(
        "Run", "run", list(labels), default=max(labels), format_func=labels.get, container=st.sidebar
    )


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
        try:
            run = _run_select()
            VIEWS[page](run)
        except DatabaseBusyError as exc:
            st.warning(f"An ingest is writing to this database right now; try again in a moment. ({exc})")
        except FeaturegraphError as exc:
            st.error(str(exc))
    st.sidebar.markdown(nav.SIGN_CONVENTION)


main()
