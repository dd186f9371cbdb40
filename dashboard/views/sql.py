"""SQL console: one read-only query with a time limit and a row cap; results as CSV or Parquet."""

from __future__ import annotations

import io

import polars as pl
import streamlit as st

from featuregraph.dashboard import nav
from featuregraph.dashboard.data import load_fresh
from featuregraph.errors import FeaturegraphError, ReadOnlyError
from featuregraph.query.output import render as render_text
from featuregraph.store.db import QueryLimits

EXAMPLE = "SELECT run_id, tag, count(*) AS prompts FROM prompts GROUP BY ALL ORDER BY prompts DESC"
EXAMPLES = """
```sql
-- one prompt's graph, pruned the seed's way (top 3 per feature, paths of >= 2 edges)
SELECT * FROM prompt_graph(0, k := 3, min_path := 2);
-- recurring 3-edge paths in at least 5 prompts
SELECT * FROM recurring_paths(n_edges := 3, min_support := 5) LIMIT 50;
-- a feature's neighbourhood and logit effects
SELECT * FROM feature_edges('1.5');
SELECT * FROM feature_logits('1.5', top := 10);
-- edges far above their cross-context noise
SELECT * FROM edge_snr WHERE p_value < 0.001 ORDER BY p_value, abs(weight) DESC LIMIT 100;
```
"""


def _downloads(frame: pl.DataFrame) -> None:
    left, right = st.columns(2)
    left.download_button("Download CSV", render_text(frame, "csv").encode("utf-8"), file_name="featuregraph.csv",
                         mime="text/csv", key="sql_csv")  # fmt: skip
    buf = io.BytesIO()
    frame.write_parquet(buf)
    right.download_button("Download Parquet", buf.getvalue(), file_name="featuregraph.parquet",
                          mime="application/vnd.apache.parquet", key="sql_parquet")  # fmt: skip


def render(run: int | None) -> None:
    st.header("SQL console")
    st.caption(
        "One SELECT (or EXPLAIN of one) at a time, on the database opened read-only in the SQL sandbox: anything "
        "that would change it, or reach a file, a setting or an extension, is refused. The query macros and views "
        "of docs/sql.md are available. " + nav.SIGN_CONVENTION
    )
    with st.expander("Examples"):
        st.markdown(EXAMPLES)
    with st.form("sql_form"):
        sql = st.text_area("SQL", EXAMPLE, height=140, key="sql_text")
        cols = st.columns(3)
        time_limit = cols[0].number_input("Time limit (s)", 0.5, 300.0, 10.0, step=1.0, key="sql_time")
        max_rows = cols[1].number_input("Row cap", 1, 1_000_000, 10_000, step=1000, key="sql_rows")
        submitted = st.form_submit_button("Run")
    if submitted:
        limits = QueryLimits(time_limit_s=float(time_limit), max_rows=int(max_rows))
        try:
            st.session_state["sql_result"] = (sql, *load_fresh("console_sql", sql, limits=limits))
        except ReadOnlyError as exc:
            st.session_state.pop("sql_result", None)
            st.error(f"Refused: {exc}")
            return
        except FeaturegraphError as exc:
            st.session_state.pop("sql_result", None)
            st.error(str(exc))
            return
    if "sql_result" not in st.session_state:
        return
    ran, frame, truncated = st.session_state["sql_result"]
    note = f": {truncated.message()} (stopped at the row cap: raise it to see more)" if truncated else ""
    st.markdown(f"**{frame.height:,} row{'' if frame.height == 1 else 's'}**{note}")
    st.dataframe(frame, hide_index=True)
    if frame.width:
        _downloads(frame)
