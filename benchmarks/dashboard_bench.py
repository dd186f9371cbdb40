"""Dashboard benchmark: how long each page takes on a large database.

    python benchmarks/dashboard_bench.py                     # ~20k prompts, ~10M edges
    python benchmarks/dashboard_bench.py --prompts 2000      # quick check
    python benchmarks/dashboard_bench.py --reuse --browser   # existing database; also time in Chromium

Builds the query benchmark's synthetic database (benchmarks/synthetic_graphs.py, loaded by
benchmarks/query_bench.py) at reduced size, adds what a sweep stores besides edges and logit
effects (tokens, clean activations, top next tokens) and one noise, validation and curve
experiment of realistic shape, then times each page with Streamlit's AppTest: a cold run
(cache cleared, as on the first visit or right after an ingest commit) and a warm one. With
--browser, also from navigation to a settled page in headless Chromium (dashboard/browser.py).
Prints a Markdown table and writes the figures as JSON next to the database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from query_bench import load, machine  # noqa: E402
from synthetic_graphs import GraphSpec, generate  # noqa: E402

TOKENS = """
INSERT INTO tokens
SELECT p.run_id, p.prompt_id, s.pos::SMALLINT, (hash(p.prompt_id, s.pos) % 50257)::INTEGER AS token_id,
       'tok' || (hash(p.prompt_id, s.pos) % 50257)
FROM prompts p, (SELECT unnest(range(16)) AS pos) s
ORDER BY p.prompt_id, s.pos
"""
ACTIVATIONS = """
INSERT INTO activations
WITH f AS (
    SELECT DISTINCT run_id, prompt_id, up_layer AS layer, up_feature AS feature FROM edges
    UNION SELECT DISTINCT run_id, prompt_id, down_layer, down_feature FROM edges
)
SELECT run_id, prompt_id, layer, (1 + hash(prompt_id, layer, feature, k) % 15)::SMALLINT AS position, feature,
       (0.2 + (hash(prompt_id, feature, k) % 1000) / 250.0)::REAL
FROM f, (SELECT unnest([0, 1]) AS k)
ORDER BY prompt_id, layer, position, feature
"""
TOP_NEXT = """
INSERT INTO top_next_tokens
SELECT p.run_id, p.prompt_id, r.rank::SMALLINT, (hash(p.prompt_id, r.rank, 'next') % 50257)::INTEGER,
       (0.5 / r.rank)::REAL, ln(0.5 / r.rank)::REAL
FROM prompts p, (SELECT unnest(range(1, 11)) AS rank) r
ORDER BY p.prompt_id, r.rank
"""
EXPERIMENT = """
INSERT INTO experiments (run_id, kind, status, spec, summary, device, featuregraph_version, torch_version,
                         started_at, finished_at)
VALUES (1, $kind, 'complete', $spec, $summary, 'cpu', 'bench', '-', now(), now())
RETURNING experiment_id
"""
NOISE_FEATURES = """
INSERT INTO noise_features
SELECT 1, $x, layer, feature, 200, (hash(layer, feature) % 200)::INTEGER,
       0.05 + (hash(feature, 'm') % 100) / 1000.0, 0.03, 0.15 + (hash(feature, 'p') % 100) / 500.0,
       0.001, 0.001, 0.003
FROM (SELECT DISTINCT up_layer AS layer, up_feature AS feature FROM edge_summary)
"""
NOISE_EDGES = """
INSERT INTO noise_edges
SELECT 1, $x, up_layer, up_feature, down_layer, down_feature, 200, (hash(up_feature, down_feature) % 200)::INTEGER,
       ((hash(up_feature, down_feature, 'm') % 200) / 10000.0 - 0.01)::REAL,
       (0.01 + (hash(up_feature, down_feature, 's') % 100) / 2000.0)::REAL,
       (0.03 + (hash(up_feature, down_feature, 'p') % 100) / 500.0)::REAL,
       (0.01 + (hash(up_feature, down_feature, 's') % 100) / 2000.0)::REAL
FROM (SELECT DISTINCT up_layer, up_feature, down_layer, down_feature FROM edge_summary)
"""
NOISE_LOGITS = """
INSERT INTO noise_logits
SELECT 1, $x, layer, feature, token_id, 200, 50, 0.0, 0.002, 0.006, 0.0, 0.1, 0.002
FROM (SELECT DISTINCT layer, feature, token_id FROM logit_effects)
"""
NOISE_CONTEXTS = """
INSERT INTO noise_contexts SELECT 1, $x, i, 'context ' || i, 32 FROM range(200) t(i)
"""
VALIDATION = """
INSERT INTO validation_results (run_id, experiment_id, prompt_index, text, arm, features, total_variation,
                                answer_token_id, answer_dprob, answer_dprob_frac)
SELECT 1, $x, i, 'validation prompt ' || i, arm, CASE arm WHEN 'path' THEN $path ELSE $control END,
       CASE arm WHEN 'path' THEN 0.2 + (i % 7) / 20.0 ELSE 0.02 + (i % 5) / 100.0 END, 42,
       CASE arm WHEN 'path' THEN -0.1 ELSE -0.01 END, CASE arm WHEN 'path' THEN -0.5 ELSE -0.05 END
FROM range(20) t(i), (SELECT unnest(['path', 'control']) AS arm)
"""
VALIDATION_TOKENS = """
INSERT INTO validation_tokens
SELECT 1, $x, i, arm, kind, r, (hash(i, arm, kind, r) % 50257)::INTEGER, 0.1, 0.05, -0.05, -0.5
FROM range(20) t(i), (SELECT unnest(['clean', 'path', 'control']) AS arm),
     (SELECT unnest(['promoted', 'suppressed']) AS kind), (SELECT unnest(range(1, 6)) AS r)
"""
CURVE = """
INSERT INTO curve_points
SELECT 1, $x, c / 4.0, 1.0 + c / 4.0, t, ln(0.1 + c / 100.0 + t / 1000.0), 0.1 + c / 100.0 + t / 1000.0
FROM range(9) a(c), (SELECT unnest([11, 22, 33, 44, 55]) AS t)
"""


def enrich(db_path: Path, planted: list[dict]) -> dict:
    """Add tokens, activations, top next tokens and three experiments; seconds per step."""
    from featuregraph.store.db import open_database

    path = planted[0]["nodes"]
    out = {}
    with open_database(db_path) as db:
        for name, sql in (("tokens", TOKENS), ("activations", ACTIVATIONS), ("top_next_tokens", TOP_NEXT)):
            start = time.perf_counter()
            db.execute(sql)
            out[f"{name}_s"] = time.perf_counter() - start
        start = time.perf_counter()
        noise = db.fetchone(EXPERIMENT, {"kind": "noise", "spec": json.dumps({"n_contexts": 200, "context_tokens": 32}),
                                         "summary": json.dumps({"contexts": 200})})[0]  # fmt: skip
        for sql in (NOISE_FEATURES, NOISE_EDGES, NOISE_LOGITS, NOISE_CONTEXTS):
            db.execute(sql, {"x": noise})
        out["noise_s"] = time.perf_counter() - start
        spec = {"features": path[:3], "control": "zero", "coefficient": 0.0}
        summary = {"prompts": 20, "mean_total_variation_path": 0.35, "mean_total_variation_control": 0.04,
                   "path_beats_control": 1.0, "mean_answer_dprob_path": -0.1}  # fmt: skip
        val = db.fetchone(
            EXPERIMENT, {"kind": "validation", "spec": json.dumps(spec), "summary": json.dumps(summary)}
        )[0]
        db.execute(VALIDATION, {"x": val, "path": ",".join(path[:3]), "control": "0.0,1.0,2.0"})
        db.execute(VALIDATION_TOKENS, {"x": val})
        spec = {
            "up": path[0],
            "down": path[1],
            "prompt": "synthetic",
            "coefficients": [c / 4 for c in range(9)],
        }
        curve = db.fetchone(EXPERIMENT, {"kind": "curve", "spec": json.dumps(spec),
                                         "summary": json.dumps({"slope": 0.25, "r2": 1.0})})[0]  # fmt: skip
        db.execute(CURVE, {"x": curve})
        db.execute("CHECKPOINT")
    return out


def page_cases(db_path: Path, planted: list[dict]) -> list[tuple[str, dict]]:
    """The page visits to time: every page, with a planted prompt, path and feature."""
    from featuregraph.store.db import open_database

    with open_database(db_path, read_only=True) as db:
        prompt = db.fetchone("SELECT min(prompt_id) FROM edge_occurrences WHERE up_layer = $l AND up_feature = $f",
                             {"l": planted[0]["start_layer"], "f": planted[0]["features"][0]})[0]  # fmt: skip
    feature = planted[0]["nodes"][1]
    return [
        ("overview", {}),
        ("graph", {"prompt": prompt}),
        ("paths", {}),
        ("feature", {"feature": feature}),
        ("noise", {}),
        ("sql", {}),
    ]


def time_apptest(db_path: Path, cases: list[tuple[str, dict]], repeat: int) -> list[dict]:
    """Cold (cache cleared) and warm AppTest runs of each page, in this process."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["FEATUREGRAPH_DB"] = str(db_path)
    app = str(HERE.parent / "dashboard" / "app.py")

    def visit(page: str, params: dict) -> tuple[float, AppTest]:
        at = AppTest.from_file(app, default_timeout=120)
        at.query_params["page"] = page
        for k, v in params.items():
            at.query_params[k] = str(v)
        start = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - start
        if at.exception or at.error:
            raise SystemExit(
                f"page {page} failed: {[e.value for e in at.exception] + [e.value for e in at.error]}"
            )
        return elapsed, at

    visit("overview", {})  # imports
    rows = []
    for page, params in cases:
        cold, warm = [], []
        for _ in range(repeat):
            st.cache_data.clear()
            cold.append(visit(page, params)[0])
            warm.append(visit(page, params)[0])
        rows.append({"page": page, "cold_median_s": statistics.median(cold), "cold_max_s": max(cold),
                     "warm_median_s": statistics.median(warm)})  # fmt: skip
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


LABELS = {"overview": "Overview", "graph": "Prompt graph", "paths": "Recurring paths", "feature": "Feature",
          "noise": "Noise & validation", "sql": "SQL console"}  # fmt: skip


def time_browser(db_path: Path, cases: list[tuple[str, dict]], repeat: int) -> dict[str, dict[str, float]]:
    """Seconds until a page has settled (graph: its boxes drawn) in headless Chromium.

    ``cold_s``: the first visit of each page in a new server, by a click in the sidebar (the
    server's cache is cold for the page's queries); ``warm_s``: the median of ``repeat`` more
    rounds of clicks; ``new_tab_s``: the median of ``repeat`` loads of the page's URL in a new
    session (Streamlit's frontend starting up, then the page, cache warm).
    """
    from urllib.parse import urlencode

    from featuregraph.dashboard.browser import chromium, served, wait_idle

    def settle(page, name: str) -> float:
        settled = wait_idle(page)
        if name == "graph":
            page.wait_for_selector("svg g.node")
            settled = max(settled, time.monotonic())
        return settled

    params = {k: v for _, p in cases for k, v in p.items()}
    clicks: dict[str, list[float]] = {}
    tabs: dict[str, list[float]] = {}
    with served(db_path) as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"{url}/?{urlencode({'page': 'sql', **params})}")
        wait_idle(page)
        for _ in range(repeat + 1):
            for name, _p in cases:
                start = time.monotonic()
                page.locator("[data-testid=stSidebar]").get_by_text(LABELS[name], exact=True).click()
                clicks.setdefault(name, []).append(settle(page, name) - start)
        for name, p in cases:
            for _ in range(repeat):
                start = time.monotonic()
                page.goto(f"{url}/?{urlencode({'page': name, **p})}")
                tabs.setdefault(name, []).append(settle(page, name) - start)
    out = {
        name: {"cold_s": clicks[name][0], "warm_s": statistics.median(clicks[name][1:]),
               "new_tab_s": statistics.median(tabs[name])}
        for name, _ in cases
    }  # fmt: skip
    print(json.dumps(out), file=sys.stderr)
    return out


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [
        f"{rows['edges']:,} edges, {rows['prompts']:,} prompts, {rows['activations']:,} activations, "
        f"{rows['logit_effects']:,} logit effects, {rows['noise_edges']:,} noise edges; "
        f"{report['machine']['cores']} cores ({report['machine']['cpu']}), DuckDB {report['machine']['duckdb']}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in report['machine']['load_avg_at_start'])}.",
        "",
        "| page | server: cold (cache cleared), median / max | server: warm | Chromium: click, cold | "
        "Chromium: click, warm | Chromium: new tab |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    browser = report.get("browser", {})
    for r in report["pages"]:
        b = browser.get(r["page"])
        cells = (
            f"{b['cold_s']:.2f} s | {b['warm_s']:.2f} s | {b['new_tab_s']:.2f} s |" if b else "- | - | - |"
        )
        lines.append(
            f"| {r['page']} | {r['cold_median_s']:.2f} / {r['cold_max_s']:.2f} s | {r['warm_median_s']:.2f} s | {cells}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/featuregraph-dashboard-bench.duckdb"))
    parser.add_argument("--reuse", action="store_true", help="time pages on an existing benchmark database")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also time pages in headless Chromium")
    args = parser.parse_args()

    staging = Path(str(args.db) + ".staging")
    report: dict = {"machine": machine()}
    if not args.reuse:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        spec = GraphSpec(prompts=args.prompts, chunk=min(5_000, args.prompts))
        gen = generate(staging, spec)
        print(f"loading {gen.edge_rows:,} edges ...", file=sys.stderr)
        report["load"] = load(args.db, staging, spec)
        planted = json.loads(gen.to_json())["planted"]
        report["enrich"] = enrich(args.db, [{**p, "nodes": [f"{p['start_layer'] + i}.{f}" for i, f in enumerate(p["features"])]}
                                            for p in planted])  # fmt: skip
        shutil.rmtree(staging, ignore_errors=True)
        Path(str(args.db) + ".planted.json").write_text(json.dumps(planted))
    planted = json.loads(Path(str(args.db) + ".planted.json").read_text())
    planted = [
        {**p, "nodes": [f"{p['start_layer'] + i}.{f}" for i, f in enumerate(p["features"])]} for p in planted
    ]

    from featuregraph.store.db import open_database

    with open_database(args.db, read_only=True) as db:
        report["rows"] = {t: int(db.fetchone(f"SELECT count(*) FROM {t}")[0])  # fixed names
                          for t in ("edges", "prompts", "activations", "logit_effects", "noise_edges")}  # fmt: skip
    cases = page_cases(args.db, planted)
    report["cases"] = cases
    report["pages"] = time_apptest(args.db, cases, args.repeat)
    if args.browser:
        report["browser"] = time_browser(args.db, cases, args.repeat)
    Path(str(args.db) + ".dashboard.json").write_text(json.dumps(report, indent=1, default=str))
    print(markdown(report))


if __name__ == "__main__":
    main()
