"""Query-layer benchmark: a large synthetic featuregraph database, bulk-loaded, then timed.

    python benchmarks/query_bench.py                      # 100k prompts, ~52M edges
    python benchmarks/query_bench.py --prompts 1000       # quick check
    python benchmarks/query_bench.py --spec demo --prompts 62000 --top 100 \
        --supports 0.001,0.01,0.1 --memory-limit 6GB      # ~500M edges at the demo's density

Steps: generate Parquet staging files (benchmarks/synthetic_graphs.py: Zipf-like feature
popularity, planted recurring paths), bulk-load them into a fresh database (edges, prompts,
logit effects), build edge_summary / edge_occurrences, then time the query helpers, each
kind in its own process so that its peak memory can be read. Prints a Markdown table and
writes the figures as JSON next to the database. The planted paths must come out on top of
the recurring-path query; the script checks it.

The database and staging files go under /tmp by default; delete them afterwards (--clean).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from synthetic_graphs import GraphSpec, demo_calibrated, generate  # noqa: E402

BLOCK = 262_144  # DuckDB's block size
TABLES = ("edges", "edge_summary_base", "edge_occurrences_base", "chain_pairs_base", "logit_effects", "prompts", "vocab")

RUN_ROW = {
    "model": "synthetic", "model_source": "path", "model_sha256": None,
    "model_config": {"n_layers": 12, "synthetic": True}, "prompts_source": "benchmarks/query_bench.py",
    "n_prompts": 0, "prepend_bos": True, "device": "cpu",
    "config": {"benchmark": True, "dtype": "float32", "sweep": {
        "coefficient": 0.0, "edge_top_k": 4, "edge_floor": 0.0, "logit_top_k": 1, "top_next_k": 0, "read_position": -1,
    }},
    "featuregraph_version": "bench", "torch_version": "-",
    "sae_lens_version": "-", "transformer_lens_version": "-",
}  # fmt: skip

INSERT_EDGES = "INSERT INTO edges SELECT * FROM read_parquet($files)"
INSERT_LOGITS = """
INSERT INTO logit_effects SELECT * FROM read_parquet($files) ORDER BY run_id, layer, feature, prompt_id, token_id
"""
INSERT_PROMPTS = """
INSERT INTO prompts (run_id, prompt_id, text, text_sha256, tag, metadata, n_tokens, n_ablations, ingested_at)
SELECT run_id, prompt_id, text, text_sha256, tag, NULL, n_tokens, n_ablations, now() FROM read_parquet($file)
"""
TABLE_BLOCKS = "SELECT count(DISTINCT block_id) FROM pragma_storage_info($table) WHERE persistent"
COUNT = {t: f"SELECT count(*) FROM {t}" for t in TABLES}  # fixed names


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load(db_path: Path, staging: Path, spec: GraphSpec, memory_limit: str | None = None) -> dict:
    """Bulk-load the staging files into a fresh database; seconds and rows per step."""
    from featuregraph.store.db import open_database
    from featuregraph.store.runs import create_run, finish_run
    from featuregraph.store.summary import rebuild_summary

    for p in (db_path, Path(str(db_path) + ".wal")):
        p.unlink(missing_ok=True)
    edge_files = sorted(str(p) for p in (staging / "edges").glob("*.parquet"))
    logit_files = sorted(str(p) for p in (staging / "logit_effects").glob("*.parquet"))
    out: dict = {}
    with open_database(db_path) as db:
        if memory_limit:
            db.execute(f"SET memory_limit = '{memory_limit}'")  # a benchmark argument, not user input
        saes = [
            {"layer": layer, "site_kind": "resid", "hook_name": f"blocks.{layer}.hook_resid_pre", "d_in": 768,
             "d_sae": spec.d_sae, "architecture": "synthetic", "release": None, "sae_id": None, "path": None,
             "sha256": "-", "neuronpedia_id": None, "config": {}}
            for layer in range(spec.layers)
        ]  # fmt: skip
        run_id = create_run(
            db,
            "benchmark",
            dict(RUN_ROW, n_prompts=spec.prompts),
            saes,
            [f"tok{i}" for i in range(spec.d_vocab)],
        )
        assert run_id == 1, "the staging files are written for run 1"

        def edges() -> None:
            with db.transaction():
                db.execute(INSERT_EDGES, {"files": edge_files})
            db.execute("CHECKPOINT")

        out["edges_s"] = _timed(edges)
        out["prompts_s"] = _timed(
            lambda: db.execute(INSERT_PROMPTS, {"file": str(staging / "prompts.parquet")})
        )
        out["logit_effects_s"] = _timed(lambda: db.execute(INSERT_LOGITS, {"files": logit_files}))
        out["summary_s"] = _timed(lambda: rebuild_summary(db))
        out["checkpoint_s"] = _timed(lambda: db.execute("CHECKPOINT"))
        finish_run(db, run_id, "complete")
        out["rows"] = {t: int(db.fetchone(COUNT[t])[0]) for t in TABLES}
        out["bytes"] = {t: int(db.fetchone(TABLE_BLOCKS, {"table": t})[0]) * BLOCK for t in TABLES}
    out["file_bytes"] = db_path.stat().st_size
    return out


# -- query workers (one process per kind, for its peak memory) -----------------------------


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _worker(kind: str, db_path: str, args: dict) -> dict:
    """Time one kind of query in a fresh process: each call twice, ``cold`` (first touch of
    its data in this process: DuckDB's buffer pool starts empty, the OS page cache is warm)
    and ``warm`` (the same call again)."""
    import random

    import featuregraph.query.api as api
    from featuregraph.store.db import open_database

    rss_before = _peak_rss_mib()
    cold: list[float] = []
    warm: list[float] = []
    warm_cpu: list[float] = []  # CPU seconds of this process (all DuckDB threads) per warm call
    rows = 0
    extra: dict = {}
    with open_database(db_path, read_only=True) as db:
        if args.get("memory_limit"):
            db.execute(f"SET memory_limit = '{args['memory_limit']}'")  # a benchmark argument, not user input
        rng = random.Random(0)
        n_prompts = int(db.fetchall("SELECT count(*) FROM prompts")[0][0])

        def twice(fn):
            nonlocal rows
            for times in (cold, warm):
                start, cpu = time.perf_counter(), time.process_time()
                result = fn()
                times.append(time.perf_counter() - start)
            warm_cpu.append(time.process_time() - cpu)
            rows += result.height if hasattr(result, "height") else result.edges.height + result.logits.height
            return result

        if kind == "prompt_graph":
            for prompt in [rng.randrange(n_prompts) for _ in range(args.get("n", 20))]:
                twice(lambda p=prompt: api.prompt_graph(db, p, k=10, min_path=2))
        elif kind == "neighbourhood":
            for feature in args["features"]:
                twice(lambda f=feature: api.neighbourhood(db, f, top_edges=20, top_tokens=10))
        elif kind == "recurring":
            call = dict(n_edges=args["n_edges"], min_support=args["min_support"], top=args.get("top_k"))
            frame = twice(lambda: api.recurring_paths(db, **call))
            for _ in range(args.get("repeat", 3) - 2):
                start, cpu = time.perf_counter(), time.process_time()
                api.recurring_paths(db, **call)
                warm.append(time.perf_counter() - start)
                warm_cpu.append(time.process_time() - cpu)
            rows = frame.height
            extra["top"] = frame.head(args.get("top", 40)).select("path", "signs", "support").to_dicts()
        elif kind == "path_prompts":
            for path in args["paths"]:
                twice(lambda p=path: api.path_prompts(db, p))
        elif kind == "compare":
            for _ in range(args.get("n", 10)):
                a, b = rng.randrange(n_prompts), rng.randrange(n_prompts)
                twice(lambda a=a, b=b: api.compare_prompts(db, a, b))
        else:
            raise SystemExit(f"unknown worker kind {kind}")
    return {"kind": kind, "cold": cold, "warm": warm, "warm_cpu": warm_cpu, "rows": rows, "peak_rss_mib": _peak_rss_mib(),
            "rss_before_mib": rss_before, **extra}  # fmt: skip


def run_worker(kind: str, db_path: Path, args: dict) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--db",
        str(db_path),
        "--worker-args",
        json.dumps(args),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the run ---------------------------------------------------------------------------------


def planted_windows(planted: list[dict], n_edges: int) -> dict[str, int]:
    """Every n_edges-long window of the planted paths -> the prompts it was planted in."""
    out = {}
    for p in planted:
        nodes = [f"{p['start_layer'] + i}.{f}" for i, f in enumerate(p["features"])]
        for s in range(len(p["signs"]) - n_edges + 1):
            out[" -> ".join(nodes[s : s + n_edges + 1])] = p["prompts"]
    return out


def check_planted(top: list[dict], planted: list[dict], n_edges: int, min_support: int) -> dict:
    """The planted windows that reach ``min_support`` must be the first rows, with at least the
    support they were planted with."""
    windows = {p: n for p, n in planted_windows(planted, n_edges).items() if n >= min_support}
    head = [r["path"] for r in top[: len(windows)]]
    found = sum(1 for path in head if path in windows)
    supports_ok = all(r["support"] >= windows[r["path"]] for r in top[: len(windows)] if r["path"] in windows)
    return {
        "planted_windows": len(windows),
        "in_top": found,
        "all_on_top": found == len(windows),
        "supports_at_least_planted": supports_ok,
    }


def summarize(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "median_s": statistics.median(ordered),
        "p95_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max_s": ordered[-1],
        "n": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/featuregraph-bench.duckdb"))
    parser.add_argument("--staging", type=Path, default=None, help="default: <db>.staging")
    parser.add_argument("--reuse-staging", action="store_true", help="skip generation if staging files exist")
    parser.add_argument("--skip-load", action="store_true", help="time queries on an existing database")
    parser.add_argument(
        "--clean", action="store_true", help="delete the database and staging files at the end"
    )
    parser.add_argument("--spec", choices=("default", "demo"), default="default",
                        help="demo: synthetic_graphs.demo_calibrated (the demo database's density)")
    parser.add_argument("--top", type=int, default=None, help="recurring paths: top-k (default: every chain)")
    parser.add_argument("--supports", default=None,
                        help="recurring-path supports as fractions of the prompts, e.g. 0.001,0.01,0.1")
    parser.add_argument("--memory-limit", default=None, help="DuckDB memory_limit for load and queries")
    parser.add_argument("--load-only", action="store_true", help="stop after generating and loading")
    parser.add_argument("--writer", action="store_true", help="time the store writer also with --skip-load")
    parser.add_argument("--writer-groups", type=int, default=4, help="groups of 16 prompts the writer times")
    parser.add_argument("--skip-queries", action="store_true", help="time only the load and the writer")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(_worker(args.worker, str(args.db), json.loads(args.worker_args))))
        return

    staging = args.staging or Path(str(args.db) + ".staging")
    if args.spec == "demo":
        spec = demo_calibrated(args.prompts, chunk=min(500, args.prompts))
    else:
        spec = GraphSpec(prompts=args.prompts, chunk=min(5_000, args.prompts))
    report: dict = {"machine": machine(), "spec": spec.__dict__, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    if args.reuse_staging and (staging / "planted.json").exists():
        gen = json.loads((staging / "planted.json").read_text())
        report["generate_s"] = None
    else:
        shutil.rmtree(staging, ignore_errors=True)
        start = time.perf_counter()
        gen = json.loads(generate(staging, spec).to_json())
        report["generate_s"] = time.perf_counter() - start
    planted = gen["planted"]
    report["planted"] = [
        {
            "nodes": [f"{p['start_layer'] + i}.{f}" for i, f in enumerate(p["features"])],
            "signs": p["signs"],
            "prompts": p["prompts"],
        }
        for p in planted
    ]

    if not args.skip_load:
        print(f"loading {gen['edge_rows']:,} edges into {args.db} ...", file=sys.stderr)
        report["load"] = load(args.db, staging, spec, args.memory_limit)
        print(json.dumps(report["load"], indent=1), file=sys.stderr)
        (args.db.parent / (args.db.name + ".load.json")).write_text(json.dumps(report, indent=1))
    if args.load_only:
        return

    n = args.prompts
    hubs = hub_features(args.db, 10)
    planted_nodes = [node for p in report["planted"] for node in p["nodes"][1:3]][:10]
    if args.supports:
        supports = sorted({max(2, round(n * float(f))) for f in args.supports.split(",")}, reverse=True)
    else:
        supports = sorted({max(2, n // 100), max(2, n // 200), max(2, n // 1000)}, reverse=True)
    jobs = [
        ("prompt_graph", {"n": 20}),
        ("neighbourhood", {"features": random_features(args.db, 20), "label": "random features"}),
        ("neighbourhood", {"features": hubs + planted_nodes, "label": "10 hubs + 10 planted-path features"}),
        ("compare", {"n": 10}),
        ("path_prompts", {"paths": [" -> ".join(p["nodes"]) for p in report["planted"]]}),
    ]
    jobs += [("recurring", {"n_edges": 3, "min_support": s, "repeat": 3, "top_k": args.top}) for s in supports]
    if args.spec == "default":  # the demo-calibrated paths are 3 edges long
        jobs += [("recurring", {"n_edges": 6, "min_support": supports[1], "repeat": 3, "top": 10})]
    report["queries"] = []
    for kind, wargs in [] if args.skip_queries else jobs:
        wargs["memory_limit"] = args.memory_limit
        print(f"timing {kind} {wargs if kind == 'recurring' else ''}", file=sys.stderr)
        res = run_worker(kind, args.db, wargs)
        res.update(
            cold=summarize(res.pop("cold")),
            warm=summarize(res.pop("warm")),
            warm_cpu=summarize(res.pop("warm_cpu")),
            args={k: v for k, v in wargs.items() if k not in ("features", "paths")},
        )
        if kind == "recurring":
            res["planted_check"] = check_planted(res["top"], planted, wargs["n_edges"], wargs["min_support"])
        report["queries"].append(res)
        print(json.dumps({k: v for k, v in res.items() if k != "top"}), file=sys.stderr)

    if not args.skip_load or args.writer:
        print("timing ingest through the store writer", file=sys.stderr)
        report["writer"] = writer_ingest(args.db, spec, groups=args.writer_groups, group=16, memory_limit=args.memory_limit)
        print(json.dumps(report["writer"]), file=sys.stderr)
    report["machine"]["load_avg_at_end"] = os.getloadavg()
    out = Path(str(args.db) + ".report.json")
    out.write_text(json.dumps(report, indent=1))
    print(markdown(report))
    if args.clean:
        shutil.rmtree(staging, ignore_errors=True)
        for p in (args.db, Path(str(args.db) + ".wal")):
            p.unlink(missing_ok=True)


def random_features(db_path: Path, k: int) -> list[str]:
    """k features drawn uniformly from those with at least one out-edge."""
    from featuregraph.store.db import open_database

    with open_database(db_path, read_only=True) as db:
        rows = db.fetchall(
            "SELECT DISTINCT up_layer, up_feature FROM edge_summary USING SAMPLE reservoir(1000 ROWS) REPEATABLE (7)"
        )
    return [f"{layer}.{feature}" for layer, feature in sorted(rows)[:: max(1, len(rows) // k)][:k]]


def writer_ingest(db_path: Path, spec: GraphSpec, groups: int, group: int, memory_limit: str | None = None) -> dict:
    """Append ``groups`` x ``group`` new prompts through store.runs.write_prompt_results (the
    ingest's own writer: edges and the summary's delta; automatic compaction as configured):
    seconds per group, then the seconds of one compaction of the delta they left."""
    import numpy as np
    from synthetic_graphs import _chunk, _popularity, plant_paths, prompt_results

    from featuregraph.store.db import open_database
    from featuregraph.store.runs import write_prompt_results
    from featuregraph.store.summary import base_rows, delta_rows, fold_delta

    rng = np.random.default_rng(spec.seed + 1)
    perm = np.stack([rng.permutation(spec.d_sae) for _ in range(spec.layers)])
    paths = plant_paths(spec, rng, perm)
    edges, _, _ = _chunk(spec, rng, _popularity(spec), perm, paths, spec.prompts, groups * group)
    results = prompt_results(edges)  # prompt ids from spec.prompts on: new to the loaded database
    times = []
    with open_database(db_path) as db:
        if memory_limit:
            db.execute(f"SET memory_limit = '{memory_limit}'")  # a benchmark argument, not user input
        stored = int(db.fetchone("SELECT count(*) FROM edges")[0])
        for g in range(groups):
            start = time.perf_counter()
            write_prompt_results(db, 1, results[g * group : (g + 1) * group])
            times.append(time.perf_counter() - start)
        delta, base = delta_rows(db), base_rows(db)
        start = time.perf_counter()
        fold_delta(db)
        fold_s = time.perf_counter() - start
    n_edges = int(edges.num_rows)
    return {"groups": groups, "prompts_per_group": group, "edge_rows": n_edges, "seconds": times,
            "edge_rows_per_s": n_edges / sum(times), "stored_edges_before": stored,
            "commit_s_median": statistics.median(times), "fold_s": fold_s, "fold_delta_rows": delta,
            "summary_base_rows": base, "load_avg": os.getloadavg()}  # fmt: skip


def hub_features(db_path: Path, k: int) -> list[str]:
    """The k features with the most out-edges (the Zipf head)."""
    from featuregraph.store.db import open_database

    with open_database(db_path, read_only=True) as db:
        rows = db.fetchall(
            "SELECT up_layer, up_feature FROM edge_summary GROUP BY ALL ORDER BY sum(n) DESC LIMIT $k",
            {"k": k},
        )
    return [f"{layer}.{feature}" for layer, feature in rows]


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import duckdb

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "duckdb": duckdb.__version__,
        "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
    }


def markdown(r: dict) -> str:
    lines = [
        f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, {r['machine']['memory_gib']} GiB, "
        f"DuckDB {r['machine']['duckdb']}",
        "",
    ]
    if "load" in r:
        ld = r["load"]
        e = ld["rows"]["edges"]
        lines += [
            f"edges: {e:,}; prompts: {ld['rows']['prompts']:,}; edge_summary: {ld['rows']['edge_summary_base']:,}; "
            f"edge_occurrences: {ld['rows']['edge_occurrences_base']:,}; logit_effects: {ld['rows']['logit_effects']:,}",
            "",
            "| step | seconds | rate |",
            "|---|---|---|",
            f"| load edges (incl. checkpoint) | {ld['edges_s']:.1f} | {e / ld['edges_s'] / 1e6:.2f} M edge rows/s |",
            f"| build edge_summary + edge_occurrences | {ld['summary_s']:.1f} | {e / ld['summary_s'] / 1e6:.2f} M edge rows/s |",
            f"| edges + summary end to end | {ld['edges_s'] + ld['summary_s']:.1f} | "
            f"{e / (ld['edges_s'] + ld['summary_s']) / 1e6:.2f} M edge rows/s |",
            f"| logit_effects (sorted) | {ld['logit_effects_s']:.1f} | |",
            "",
            "| table | bytes | bytes per edge row |",
            "|---|---|---|",
        ]
        for t, b in ld["bytes"].items():
            lines.append(f"| {t} | {b / 2**20:,.0f} MiB | {b / e:.2f} |")
        lines.append(f"| whole file | {ld['file_bytes'] / 2**20:,.0f} MiB | {ld['file_bytes'] / e:.2f} |")
        lines.append("")
    lines += [
        "| query | cold median | cold p95 | warm median | warm p95 | warm CPU median | peak RSS | rows | notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for q in r["queries"]:
        note = ""
        if "planted_check" in q:
            c = q["planted_check"]
            note = f"planted windows on top: {c['in_top']}/{c['planted_windows']}"
        name = q["kind"] + (f" {q['args']}" if q["kind"] == "recurring" else "")
        if q["args"].get("label"):
            name += f" ({q['args']['label']})"
        c, w = q["cold"], q["warm"]
        lines.append(
            f"| {name} | {c['median_s'] * 1e3:.0f} ms | {c['p95_s'] * 1e3:.0f} ms | {w['median_s'] * 1e3:.0f} ms "
            f"| {w['p95_s'] * 1e3:.0f} ms | {q['warm_cpu']['median_s'] * 1e3:.0f} ms | {q['peak_rss_mib']:.0f} MiB "
            f"| {q['rows']} | {note} |"
        )
    if "writer" in r:
        w = r["writer"]
        lines += ["", f"store writer (write_prompt_results, {w['prompts_per_group']} prompts per transaction, summary "
                      f"delta appended) into the loaded database: {w['edge_rows']:,} edge rows in "
                      f"{sum(w['seconds']):.1f} s = {w['edge_rows_per_s'] / 1e3:.0f} k edge rows/s"]  # fmt: skip
        if "fold_s" in w:
            lines.append(f"at {w['stored_edges_before'] / 1e6:.1f} M stored edges: commit median {w['commit_s_median']:.3f} s; "
                         f"one compaction of its {w['fold_delta_rows']:,} delta rows into a {w['summary_base_rows'] / 1e6:.1f} M-row "
                         f"summary base {w['fold_s']:.1f} s")  # fmt: skip
    m = r["machine"]
    lines += ["", f"1-minute load average: {m['load_avg_at_start'][0]:.1f} at start, "
                  f"{m.get('load_avg_at_end', [float('nan')])[0]:.1f} at end"]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
