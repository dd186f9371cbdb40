"""The database the dashboard tests look at, built the way a user would build one.

A real ingest of the tiny random model with three SAEs (so two-edge paths can recur), then a
noise baseline, a validation of a recurring path and a response curve along it. Built once
per test session (about 10 s on top of the shared ``tiny_assets``). Import the fixture:
``from test_dashboard_support import dashboard_db_fixture  # noqa: F401``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import tiny_config

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
PROMPTS = [
    ("The quick brown fox", "alpha"),
    ("Copyright (C", "beta"),
    ("When Mary and John went to the store, John gave a drink to", "alpha"),
    ("A cat sat on the mat", "beta"),
    ("The quick brown dog", "alpha"),
    ("Copyright (c) 2024", "beta"),
    ('<b>bold & "quoted"</b>', "alpha"),
    ("one two three four", "beta"),
]
CORPUS = [
    "the cat and the dog",
    "a b c d e f",
    "hello world again",
    "numbers 1 2 3 4",
    "some other text",
    "more noise",
]


@dataclass(frozen=True)
class DashboardDb:
    path: Path
    run_id: int
    path_nodes: tuple[str, ...]  # a recurring two-edge path, validated and with a response curve
    path_signs: str


def build_dashboard_db(assets: Path, root: Path) -> DashboardDb:
    from featuregraph.ingest.experiments import run_curve, run_noise, run_validation
    from featuregraph.ingest.noise import NoiseSpec
    from featuregraph.ingest.run import ingest
    from featuregraph.ingest.validation import ValidationSpec
    from featuregraph.query import api
    from featuregraph.store.db import open_database

    prompts = root / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"text": t, "tag": tag}) for t, tag in PROMPTS) + "\n")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 3) + "\n")
    new = root / "new.jsonl"
    new.write_text(
        "\n".join(json.dumps({"text": t, "answer": " the"}) for t in ["The cat", "A dog ran", "Copyright (C"])
        + "\n"
    )
    db = root / "dashboard.duckdb"
    summary = ingest(db, prompts, tiny_config(assets, edge_top_k=8), progress=False)
    run_noise(db, NoiseSpec(str(corpus), n_contexts=12, context_tokens=6), progress=False)
    with open_database(db, read_only=True) as con:
        top = api.recurring_paths(con, n_edges=2, min_support=2).row(0, named=True)
    nodes = tuple(top["nodes"])
    signs = "".join("+" if s > 0 else "-" for s in top["signs"])
    run_validation(db, ValidationSpec(nodes, str(new), control="zero"))
    run_curve(db, nodes[0], nodes[1], "The quick brown fox", [0.0, 0.5, 1.0, 1.5, 2.0])
    return DashboardDb(db, summary.run_id, nodes, signs)


_BUILT: dict[Path, DashboardDb] = {}  # each test module that imports the fixture gets its own copy of it


@pytest.fixture(scope="session", name="dashboard_db")
def dashboard_db_fixture(tiny_assets, tmp_path_factory) -> DashboardDb:
    if tiny_assets not in _BUILT:
        _BUILT[tiny_assets] = build_dashboard_db(tiny_assets, tmp_path_factory.mktemp("dashboard"))
    return _BUILT[tiny_assets]


def app_test(monkeypatch, db: Path | None, page: str | None = None, **params: object):
    """An AppTest of the dashboard on ``db`` (None: no database given), at ``?page=...&params``."""
    from streamlit.testing.v1 import AppTest

    if db is None:
        monkeypatch.delenv("FEATUREGRAPH_DB", raising=False)
    else:
        monkeypatch.setenv("FEATUREGRAPH_DB", str(db))
    at = AppTest.from_file(str(APP), default_timeout=90)
    if page is not None:
        at.query_params["page"] = page
    for name, value in params.items():
        at.query_params[name] = str(value)
    return at
