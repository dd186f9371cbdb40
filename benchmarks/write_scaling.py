"""Write scaling: the cost of one committed group of prompts as the database grows.

    python benchmarks/write_scaling.py --sizes 10,30,100        # millions of stored edges
    python benchmarks/write_scaling.py --sizes 1,3 --clean      # quick check

A synthetic database calibrated to the demo's per-prompt statistics (synthetic_graphs.py,
``demo_calibrated``) is bulk-loaded up to each size in turn (edges from Parquet, then the summary
base rebuilt, as ``featuregraph optimize`` leaves it). At each size the script writes
``--groups`` groups of ``--group`` new prompts through the ingest's own writer
(``store.runs.write_prompt_results``, automatic compaction off) and times each commit; then
folds their delta into the base (one compaction) and times that; then loads the same edge rows
from Parquet into a scratch table with one ``INSERT ... SELECT`` (the raw load rate of the same
rows, measured in the same run). ``sustained`` is rows / (commits + the compaction). Bytes per
stored edge row are the database file's size after a checkpoint over the edges stored, with
every derived structure (summary base, occurrences, delta). Prints a Markdown table and writes
JSON next to the database; the database goes under /tmp (``--clean`` deletes it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pyarrow.parquet as pq  # noqa: E402
from query_bench import RUN_ROW  # noqa: E402
from synthetic_graphs import demo_calibrated, generate, prompt_results  # noqa: E402

INSERT_EDGES = "INSERT INTO edges SELECT * FROM read_parquet($files)"
RAW_LOAD = "CREATE OR REPLACE TEMP TABLE __raw AS SELECT * FROM read_parquet($files)"
USED_BYTES = "SELECT used_blocks * block_size FROM pragma_database_size()"
EDGES_PER_PROMPT = 8_300  # about what demo_calibrated gives


def load_until(db, parts: list[str], next_part: int, stored: int, size: int) -> tuple[int, float]:
    """Bulk-load staging ``parts`` from ``next_part`` on until ``size`` edges are stored (``stored``
    now), then rebuild the summary base and checkpoint. Returns the next part and the seconds."""
    from featuregraph.store.summary import rebuild_summary

    batch = []
    while stored < size and next_part < len(parts):
        batch.append(parts[next_part])
        stored += pq.ParquetFile(parts[next_part]).metadata.num_rows
        next_part += 1
    start = time.perf_counter()
    if batch:
        db.execute(INSERT_EDGES, {"files": batch})
    rebuild_summary(db)
    db.execute("CHECKPOINT")
    return next_part, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,30,100", help="stored edges (millions) to measure at")
    ap.add_argument("--groups", type=int, default=24, help="groups written and timed at each size")
    ap.add_argument("--group", type=int, default=16, help="prompts per group (transaction)")
    ap.add_argument("--d-sae", type=int, default=24_576)
    ap.add_argument("--dir", default="/tmp/featuregraph_write_scaling")
    ap.add_argument("--clean", action="store_true", help="delete the database and staging files at the end")
    ap.add_argument("--reuse-staging", action="store_true", help="keep the staging files of an earlier run")
    ap.add_argument("--memory-limit", default="4GB", help="DuckDB's memory_limit (spills to disk past it)")
    args = ap.parse_args()
    os.environ["FEATUREGRAPH_COMPACT_ROWS"] = "0"  # compactions only where timed
    from featuregraph.store.db import open_database
    from featuregraph.store.runs import create_run, write_prompt_results
    from featuregraph.store.summary import delta_rows, fold_delta

    sizes = [int(float(s) * 1e6) for s in args.sizes.split(",")]
    work = Path(args.dir)
    if not args.reuse_staging:
        shutil.rmtree(work, ignore_errors=True)
    (work / "bench.duckdb").unlink(missing_ok=True)
    Path(str(work / "bench.duckdb") + ".wal").unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    chunk = args.groups * args.group  # one staging part per measured batch
    load_prompts = -(-max(sizes) // EDGES_PER_PROMPT)
    n_parts_load = -(-load_prompts // chunk)
    total = (n_parts_load + len(sizes)) * chunk
    t0 = time.perf_counter()
    spec = demo_calibrated(total, d_sae=args.d_sae, chunk=chunk)
    if not (args.reuse_staging and (work / "staging" / "planted.json").exists()):
        generate(work / "staging", spec)
    gen_s = time.perf_counter() - t0
    parts = sorted(str(p) for p in (work / "staging" / "edges").glob("*.parquet"))
    db_path = work / "bench.duckdb"
    rows = []
    with open_database(db_path) as db:
        db.execute(f"SET memory_limit = '{args.memory_limit}'")  # a benchmark argument, not user input
        run = RUN_ROW | {"n_prompts": total}
        create_run(db, "write-scaling", run, [], [])
        stored, next_part = 0, 0
        measure_parts = parts[-len(sizes):]
        load_parts = parts[: -len(sizes)]
        for size, mpart in zip(sizes, measure_parts, strict=True):
            next_part, load_s = load_until(db, load_parts, next_part, stored, size)
            stored_now = int(db.fetchone("SELECT count(*) FROM edges")[0])
            # used blocks, not the file: blocks freed by a rebuild stay in the file for reuse
            size_bytes = int(db.fetchone(USED_BYTES)[0])
            results = prompt_results(pq.read_table([mpart]))
            group_rows, commit_s = [], []
            for g in range(args.groups):
                chunk_r = results[g * args.group : (g + 1) * args.group]
                start = time.perf_counter()
                write_prompt_results(db, 1, chunk_r)
                commit_s.append(time.perf_counter() - start)
                group_rows.append(sum(len(r.tables["edges"]["weight"]) for r in chunk_r))
            delta = delta_rows(db)
            start = time.perf_counter()
            fold_delta(db)
            fold_s = time.perf_counter() - start
            start = time.perf_counter()
            db.execute(RAW_LOAD, {"files": [mpart]})
            raw_s = time.perf_counter() - start
            db.execute("DROP TABLE __raw")
            written = sum(group_rows)
            row = {
                "stored_edges": stored_now, "bytes_per_edge": size_bytes / stored_now, "load_and_rebuild_s": load_s,
                "commit_s_median": statistics.median(commit_s), "commit_s_max": max(commit_s),
                "rows_per_group": statistics.mean(group_rows), "fold_s": fold_s, "fold_rows": delta,
                "commit_rows_per_s": written / sum(commit_s), "sustained_rows_per_s": written / (sum(commit_s) + fold_s),
                "raw_parquet_rows_per_s": written / raw_s, "load": os.getloadavg()[0],
            }  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
            stored = stored_now + written
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "generate_s": gen_s,
              "d_sae": args.d_sae, "groups": args.groups, "group": args.group, "rows": rows}  # fmt: skip
    (work / "write_scaling.json").write_text(json.dumps(report, indent=1))
    print("| stored edges | commit (s, median / max) | rows per commit | commit rows/s | fold (s, rows) "
          "| sustained rows/s | raw Parquet rows/s | bytes/edge | load avg |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stored_edges'] / 1e6:.1f} M | {r['commit_s_median']:.3f} / {r['commit_s_max']:.3f} | "
              f"{r['rows_per_group']:,.0f} | {r['commit_rows_per_s'] / 1e6:.2f} M | {r['fold_s']:.1f} ({r['fold_rows']:,}) | "
              f"{r['sustained_rows_per_s'] / 1e6:.2f} M | {r['raw_parquet_rows_per_s'] / 1e6:.2f} M | "
              f"{r['bytes_per_edge']:.1f} | {r['load']:.1f} |")  # fmt: skip
    if args.clean:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
