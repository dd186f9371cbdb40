"""DFA rows in the database: `featuregraph dfa` on a stored run, the rows' sums in SQL, re-runs,
bad input, and migration 0015 on an older database."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from dfa_models import D_SAE, LAYER, attention_sae, resid_sae, sae_pre_activation, tiny_model, tokens
from helpers import all_rows, database_before, insert_run, make_run
from query_graphs import VOCAB, prompt_result, sae_rows
from typer.testing import CliRunner

import featuregraph.ingest.dfa_run as dfa_run
from featuregraph.cli import app
from featuregraph.ingest import dfa
from featuregraph.store.db import open_database
from featuregraph.store.migrate import available_migrations
from featuregraph.store.models import decode_feature
from featuregraph.store.runs import create_run, finish_run, write_prompt_results

ATTN_ROW = {
    **sae_rows(range(1), d_sae=D_SAE)[0],
    "layer": LAYER,
    "site_kind": "attn_z",
    "hook_name": f"blocks.{LAYER}.attn.hook_z",
}
# Layer 0 in the table (run_saes is keyed by (run_id, layer) before migration 0014); the loaded
# residual SAE the recursion uses sits at LAYER.
RESID_ROW = sae_rows(range(1), d_sae=64)[0]
PROMPT_TOKENS = {p: tokens(n, seed=p).flatten().tolist() for p, n in ((0, 7), (1, 9), (2, 5))}


def dfa_database(path, attention: bool = True):
    """A run with a residual and (``attention``) an attention-output SAE at block LAYER and three
    prompts whose stored token ids are PROMPT_TOKENS."""
    with open_database(path) as db:
        run = create_run(db, "dfa", make_run(), [RESID_ROW, ATTN_ROW] if attention else [RESID_ROW], VOCAB)
        results = []
        for p, ids in PROMPT_TOKENS.items():
            r = prompt_result(p, [], tokens=[f"t{i}" for i in ids])
            r.tables["tokens"]["token_id"] = np.array(ids, dtype=np.int32)
            results.append(r)
        write_prompt_results(db, run, results)
        finish_run(db, run, "complete")
    return run


@pytest.fixture()
def tiny_run(monkeypatch):
    """Stand-in for load_run: the tiny model and its SAEs, as SaeSite-like objects."""
    model = tiny_model()
    sites = [
        SimpleNamespace(hook_name=f"blocks.{LAYER}.hook_resid_pre", sae=resid_sae(model)),
        SimpleNamespace(hook_name=f"blocks.{LAYER}.attn.hook_z", sae=attention_sae(model)),
    ]
    ctx = SimpleNamespace(config=SimpleNamespace(sweep=SimpleNamespace(read_position=-1)),
                          loaded=SimpleNamespace(model=model, sites=sites))  # fmt: skip
    monkeypatch.setattr(dfa_run, "load_run", lambda db, run_id, device=None: ctx)
    return ctx


def _cli(*args):
    res = CliRunner().invoke(app, ["dfa", *map(str, args)])
    return res.exit_code, res.output.strip()


SUMS = """
SELECT f.prompt_id, f.feature, f.pre_activation, f.position, sum(p.value) AS total, count(*) FILTER (p.term = 'head_source') AS n
FROM dfa_features f JOIN dfa_parts p USING (run_id, prompt_id, layer, feature)
WHERE p.method = 'dfa' GROUP BY ALL ORDER BY ALL
"""
RESID_SUMS = """
SELECT r.prompt_id, r.feature, r.head, r.source_position, sum(r.value) AS total, any_value(h.value) AS part
FROM dfa_parts r JOIN dfa_parts h ON h.run_id = r.run_id AND h.prompt_id = r.prompt_id AND h.feature = r.feature
  AND h.head = r.head AND h.source_position = r.source_position AND h.method = 'dfa'
WHERE r.method = 'dfa_resid' GROUP BY ALL ORDER BY ALL
"""


def test_dfa_command_stores_parts_that_sum_in_sql(tmp_path, tiny_run):
    path = tmp_path / "fg.duckdb"
    run = dfa_database(path)
    code, out = _cli(path, "--run", run, "--top-k", 5, "--recurse", 2, "--resid-top-k", 3, "-q")
    assert code == 0, out
    assert out.startswith(f"dfa run {run}: ") and "3 prompts" in out
    with open_database(path, read_only=True) as db:
        sums = db.fetchall(SUMS)
        resid = db.fetchall(RESID_SUMS)
        n_parts = db.fetchone("SELECT count(*) FROM dfa_parts")[0]
    assert {r[0] for r in sums} == set(PROMPT_TOKENS)
    model, (_, attn) = tiny_run.loaded.model, tiny_run.loaded.sites
    for prompt_id, feature, pre, position, total, n in sums:
        assert position == len(PROMPT_TOKENS[prompt_id]) - 1 and n == 5
        assert total == pytest.approx(pre, abs=1e-5)
        site, index = decode_feature(feature)
        cache = dfa.attention_cache(model, tokens(len(PROMPT_TOKENS[prompt_id]), seed=prompt_id), LAYER)
        assert site == "attn_z" and pre == pytest.approx(
            float(sae_pre_activation(attn.sae, cache.z[position])[index]), abs=1e-5
        )
    assert len(resid) == 2 * len(sums)
    for *_, total, part in resid:
        assert total == pytest.approx(part, abs=1e-5)
    # Computing again replaces the prompts' rows.
    assert _cli(path, "--run", run, "--top-k", 5, "--recurse", 2, "--resid-top-k", 3, "-q")[0] == 0
    with open_database(path, read_only=True) as db:
        assert db.fetchone("SELECT count(*) FROM dfa_parts")[0] == n_parts


def test_a_run_without_an_attention_sae_is_one_line_and_writes_nothing(tmp_path, tiny_run):
    path = tmp_path / "fg.duckdb"
    run = dfa_database(path, attention=False)
    code, out = _cli(path, "--run", run, "-q")
    assert code == 2 and len(out.splitlines()) == 1
    assert "no attention-output SAE (blocks.L.attn.hook_z)" in out and "blocks.0.hook_resid_pre" in out
    assert _cli(path, "--run", 7)[1] == f"Error: no run 7 in {path}"
    assert "recurse must be between" in _cli(path, "--recurse", 99)[1]
    with open_database(path, read_only=True) as db:
        assert db.fetchone("SELECT count(*) FROM dfa_features")[0] == 0


def test_migration_0015_upgrades_an_older_database(tmp_path):
    path = tmp_path / "old.duckdb"
    con = database_before(path, 15)
    insert_run(con, "old", "complete")
    con.execute("INSERT INTO prompts (run_id, prompt_id, text, text_sha256, n_tokens, n_ablations, ingested_at) "
                "VALUES (1, 0, 'p', 'h', 2, 1, now())")  # fmt: skip
    con.execute("INSERT INTO edges VALUES (1, 0, 0, 3, 1, 4, -0.5)")
    before = all_rows(con)
    con.close()
    with open_database(path) as db:
        assert {r[0] for r in db.fetchall("SELECT version FROM schema_migrations")} == {
            m.version for m in available_migrations()
        }  # 15 and every later one
        after = all_rows(db)
        assert {t: after[t] for t in before} == before  # nothing existing changes
        assert {t: rows for t, rows in after.items() if t not in before and t.startswith("dfa_")} == {
            "dfa_features": [], "dfa_parts": []
        }
        db.execute(
            "INSERT INTO dfa_parts VALUES (1, 0, 1, 268435459, 'dfa', 'head_source', 2, 1, NULL, NULL, 0.25)"
        )
        assert db.fetchone("SELECT value FROM dfa_parts")[0] == 0.25


def _attention_name(layer: int, feature: int) -> str:
    """The page's name of a stored attention feature: ``L.att.F`` once feature names carry the
    site (migration 0014's naming), the stored integer ``L.<encoded>`` before."""
    from featuregraph.store.models import Node

    index = decode_feature(feature)[1]
    try:
        Node.parse(f"{layer}.att.{index}")
        return f"{layer}.att.{index}"
    except ValueError:
        return f"{layer}.{feature}"


def test_feature_page_shows_the_dfa_heatmap(tmp_path, tiny_run, monkeypatch):
    from test_dashboard_support import app_test

    path = tmp_path / "fg.duckdb"
    run = dfa_database(path)
    assert _cli(path, "--run", run, "--top-k", 6, "--recurse", 2, "-q")[0] == 0
    with open_database(path, read_only=True) as db:
        layer, feature, prompt = db.fetchone("SELECT layer, feature, prompt_id FROM dfa_features "
                                             "ORDER BY activation DESC, prompt_id LIMIT 1")  # fmt: skip
        cells = db.fetchall("SELECT head, source_position, value FROM dfa_parts WHERE prompt_id = ? AND feature = ? "
                            "AND term = 'head_source'", [prompt, feature])  # fmt: skip
        n_resid = db.fetchone("SELECT count(*) FROM dfa_parts WHERE prompt_id = ? AND feature = ? AND method = 'dfa_resid'",
                              [prompt, feature])[0]  # fmt: skip
    name = _attention_name(layer, feature)
    if name == f"{layer}.{feature}":
        # Before feature names carry the site (h13n's 0014), the page checks the stored integer
        # against the SAE's width: widen the row so the encoded integer passes that check.
        with open_database(path) as db:
            db.execute("UPDATE run_saes SET d_sae = ? WHERE site_kind = 'attn_z'", [feature + 1])
    at = app_test(monkeypatch, path, "feature", feature=name, run=run).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [t.label for t in at.tabs][-1] == "DFA"
    assert at.selectbox(key="feature_dfa_prompt").value == prompt
    charts = [c for c in at.get("vega_lite_chart") if '"rect"' in c.proto.spec]
    assert len(charts) == 1
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    assert len(charts[0].proto.datasets) == 1
    data = convert_arrow_bytes_to_pandas_df(charts[0].proto.datasets[0].data.data).to_dict("records")
    assert sorted((d["head"], d["source_position"], round(d["value"], 9)) for d in data) == sorted(
        (h, s, round(v, 9)) for h, s, v in cells
    )
    frames = [d.value for d in at.dataframe]
    assert any(len(f) == n_resid and "up" in f.columns for f in frames) and n_resid > 0
    # A residual feature's page has no DFA tab.
    at = app_test(monkeypatch, path, "feature", feature="0.3", run=run).run()
    assert "DFA" not in [t.label for t in at.tabs]
