"""Writing query results: a table on the terminal, or CSV, JSON or Parquet to a file or stdout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl

from featuregraph.errors import InputError

FORMATS = ("table", "csv", "json", "parquet")


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    """CSV has no lists or structs: write those cells as JSON text."""
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    if not nested:
        return frame
    return frame.with_columns(
        pl.col(name).map_elements(
            lambda v: json.dumps(v.to_list() if isinstance(v, pl.Series) else v), return_dtype=pl.String
        )
        for name in nested
    )


def render(frame: pl.DataFrame, fmt: str) -> str:
    """``frame`` as text in ``fmt`` (table, csv or json)."""
    if fmt == "table":
        with pl.Config(
            tbl_rows=max(frame.height, 1),
            tbl_cols=-1,
            fmt_str_lengths=80,
            tbl_width_chars=200,
            fmt_table_cell_list_len=8,
            tbl_hide_dataframe_shape=True,
        ):
            return str(frame)
    if fmt == "csv":
        return _flat(frame).write_csv()
    if fmt == "json":
        buf = io.StringIO()
        frame.write_json(buf)
        return buf.getvalue() + "\n"
    raise InputError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def write(frame: pl.DataFrame, fmt: str, out: Path | None) -> str | None:
    """Write ``frame`` to ``out`` in ``fmt``; without ``out``, return the text for stdout."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "parquet":
        if out is None:
            raise InputError("--format parquet needs --out FILE")
        frame.write_parquet(out)
        return None
    text = render(frame, fmt)
    if out is None:
        return text
    out.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return None


__all__ = ["FORMATS", "render", "write"]
