"""What publishing snapshots costs an ingest as the database grows (store/snapshot.py).

    nice -n 5 python benchmarks/snapshot_cost.py --sizes 15,55 --ingest-s 150 --clean

A synthetic database (synthetic_graphs.py's ``demo_calibrated``, bulk-loaded as in
write_scaling.py) is grown to each size (millions of stored edges); at each size one group of
prompts is committed and a snapshot published after it, ``--repeats`` times: seconds per publish
and the file size. At the largest size, an ingest is simulated for ``--ingest-s`` seconds twice,
back to back: every ``--sweep-s`` seconds of "sweeping" (a sleep standing in for the model's
forward passes, which a GPU does without this process's CPU) one group of ``--group`` prompts is
committed through the ingest's writer and its writer session publishes as a real ingest's does:
first with the default policy (every 30 s, at most a tenth of the time), then with no interval at
all (``every_s=0``: only the copy-time cap limits it). Reports the share of the wall time spent
publishing, the start's publish included. Prints JSON lines; the database goes under /tmp.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pyarrow.parquet as pq  # noqa: E402
from query_bench import RUN_ROW  # noqa: E402
from synthetic_graphs import demo_calibrated, generate, prompt_results  # noqa: E402
from write_scaling import EDGES_PER_PROMPT, load_until  # noqa: E402


def _simulated_ingest(db_path: Path, results: list, first_id: int, args, every_s: float | None) -> dict:
    """Commit groups of ``results`` (renumbered from ``first_id``) between sleeps, publishing as an ingest."""
    from featuregraph.store.db import open_database
    from featuregraph.store.runs import write_prompt_results
    from featuregraph.store.snapshot import writer_session

    db = open_database(db_path)
    start = time.perf_counter()
    commits, commit_s, pid = 0, 0.0, first_id
    with writer_session(db_path, {"what": "snapshot_cost benchmark"}, db) as snapshots:
        if every_s is not None:
            snapshots.every_s = every_s
        snapshots.start(db)
        while time.perf_counter() - start < args.ingest_s:
            time.sleep(args.sweep_s)
            group = []
            for r in results[(commits * args.group) % len(results):][: args.group]:
                group.append(dataclasses.replace(r, prompt_id=pid))
                pid += 1
            t = time.perf_counter()
            write_prompt_results(db, 1, group)
            commit_s += time.perf_counter() - t
            snapshots.after_commit(db)
            commits += 1
        wall = time.perf_counter() - start
        published, publish_s = snapshots.published, snapshots.seconds
    return {"policy": "default (30 s, 10%)" if every_s is None else f"every_s={every_s} (cap only)", "wall_s": wall,
            "commits": commits, "commit_s": commit_s, "publishes": published, "publish_s": publish_s,
            "publish_share": publish_s / wall, "load": os.getloadavg()[0], "next_prompt_id": pid}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="15,55", help="stored edges (millions) to measure at")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--group", type=int, default=2, help="prompts per commit")
    ap.add_argument("--sweep-s", type=float, default=1.0, help="simulated sweep seconds between commits")
    ap.add_argument("--ingest-s", type=float, default=150.0, help="seconds of each simulated ingest")
    ap.add_argument("--dir", default="/tmp/featuregraph_snapshot_cost")
    ap.add_argument("--clean", action="store_true")
    args = ap.parse_args()
    os.environ["FEATUREGRAPH_COMPACT_ROWS"] = "0"  # no compaction in the middle of a timing
    from featuregraph.store.db import open_database
    from featuregraph.store.runs import create_run, write_prompt_results
    from featuregraph.store.snapshot import publish_snapshot, remove_snapshot

    sizes = [int(float(s) * 1e6) for s in args.sizes.split(",")]
    work = Path(args.dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    chunk = 256
    total = -(-max(sizes) // EDGES_PER_PROMPT) + chunk
    t0 = time.perf_counter()
    generate(work / "staging", demo_calibrated(total, chunk=chunk))
    print(json.dumps({"generate_s": time.perf_counter() - t0, "load": os.getloadavg()[0]}), flush=True)
    parts = sorted(str(p) for p in (work / "staging" / "edges").glob("*.parquet"))
    results = prompt_results(pq.read_table([parts[-1]]))  # committed through the writer; the rest is bulk-loaded
    next_id = 10_000_000  # above every bulk-loaded prompt id
    db_path = work / "bench.duckdb"
    next_part = 0
    for size in sizes:
        with open_database(db_path) as db:
            db.execute("SET memory_limit = '4GB'")
            if not db.fetchone("SELECT count(*) FROM runs")[0]:
                create_run(db, "snapshot-cost", RUN_ROW | {"n_prompts": total}, [], [])
            stored = int(db.fetchone("SELECT count(*) FROM edges")[0])
            next_part, load_s = load_until(db, parts[:-1], next_part, stored, size)
            publish = []
            for _ in range(args.repeats):
                group = [dataclasses.replace(r, prompt_id=next_id + i) for i, r in enumerate(results[: args.group])]
                next_id += args.group
                write_prompt_results(db, 1, group)
                publish.append(publish_snapshot(db))
            edges = int(db.fetchone("SELECT count(*) FROM edges")[0])
        remove_snapshot(db_path)
        size_b = db_path.stat().st_size
        # Where a publish's time goes: the copy itself (cp) and the fsync after it.
        copy = work / "copy.tmp"
        t = time.perf_counter()
        subprocess.run(["cp", "--reflink=auto", str(db_path), str(copy)], check=True)
        cp_s = time.perf_counter() - t
        with open(copy, "rb+") as f:
            t = time.perf_counter()
            os.fsync(f.fileno())
            fsync_s = time.perf_counter() - t
        copy.unlink()
        print(json.dumps({"stored_edges": edges, "file_gb": size_b / 1e9, "load_s": load_s, "publish_s": publish,
                          "gb_per_s": [size_b / 1e9 / p for p in publish], "cp_s": cp_s, "fsync_s": fsync_s,
                          "load": os.getloadavg()[0]}), flush=True)  # fmt: skip
    for every_s in (None, 0.0):
        row = _simulated_ingest(db_path, results, next_id, args, every_s)
        next_id = row.pop("next_prompt_id")
        row["file_gb"] = db_path.stat().st_size / 1e9
        print(json.dumps(row), flush=True)
    if args.clean:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
