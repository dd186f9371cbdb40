"""Top-k recurring paths on a large database with and without a pending delta, checked against
the full search; then one compaction (fold + pair index) and the same queries after it.

    python benchmarks/query_bench.py --spec demo --prompts 60000 --load-only --db DB --memory-limit 6GB
    python benchmarks/paths_delta_bench.py DB --new-prompts 2900 --check 6000,600,60

Steps: (1) on the compacted database, top-100 3-edge paths at each support, from the pair
index, then from the full search (a temporary ``chain_pair_floors`` with NULL floors hides the
index from the macros in this connection only), and whether both give the same rows; (2) append
``--new-prompts`` prompts drawn from the same generator and popularity as the database (the
store's writer, 16 per commit, no automatic compaction): a pending delta; (3) the same queries
with the delta pending (index and delta edges; full search again where ``--check`` asks);
(4) one compaction (its pair index update timed apart), a CHECKPOINT, the pair index counted
once more in full, alone, and whether the update's rows equal the full count's at the update's
floor; then the queries again. ``--skip-queries``: steps 2 and 4 only (the compaction's cost
for a delta of ``--new-prompts``). Prints one JSON line per step. The database is modified
(prompts appended, then compacted).
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

TOP = "SELECT path, signs, support, support_any, mean_weights FROM recurring_paths(n_edges := 3, min_support := ?, top := 100)"
HIDE_INDEX = "CREATE OR REPLACE TEMP TABLE chain_pair_floors AS SELECT run_id, CAST(NULL AS INTEGER) AS floor FROM runs"
SHOW_INDEX = "DROP TABLE temp.chain_pair_floors"
# The run's index rows at or above a floor, as one fingerprint (count, rows' hash sum).
INDEX_PRINT = """
SELECT count(*), sum(hash(n, a_layer, a_feature, b_layer, b_feature, c_layer, c_feature, ab_sign, bc_sign,
                          prompt_id, ab_weight, bc_weight, ab_ablation_max_abs, bc_ablation_max_abs))
FROM chain_pairs_base WHERE run_id = 1 AND n >= ?
"""


def timed(fn, repeat: int = 1):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def queries(db, supports: list[int], check: set[int], label: str) -> None:
    for s in supports:
        rows, times = timed(lambda s=s: db.fetchall(TOP, [s]), 2)
        out = {"step": label, "support": s, "index_s": times, "rows": len(rows)}
        if s in check:
            db.execute(HIDE_INDEX)
            full, full_times = timed(lambda s=s: db.fetchall(TOP, [s]))
            db.execute(SHOW_INDEX)
            out.update(full_s=full_times[0], same=full == rows)
        out["load_avg"] = os.getloadavg()[0]
        print(json.dumps(out), flush=True)


def append_prompts(db, count: int, prompts: int) -> dict:
    import numpy as np
    from synthetic_graphs import _chunk, _popularity, demo_calibrated, plant_paths, prompt_results

    from featuregraph.store.runs import write_prompt_results

    spec = demo_calibrated(prompts)
    rng = np.random.default_rng(spec.seed)
    cdf = _popularity(spec)
    perm = np.stack([rng.permutation(spec.d_sae) for _ in range(spec.layers)])  # the database's popularity
    paths = plant_paths(spec, rng, perm)
    rng = np.random.default_rng(spec.seed + 12345)
    first = int(db.fetchone("SELECT max(prompt_id) + 1 FROM prompts")[0])
    times, rows = [], 0
    for start in range(0, count, 500):
        edges, _, _ = _chunk(spec, rng, cdf, perm, paths, first + start, min(500, count - start))
        rows += edges.num_rows
        results = prompt_results(edges)
        for g in range(0, len(results), 16):
            t = time.perf_counter()
            write_prompt_results(db, 1, results[g : g + 16])
            times.append(time.perf_counter() - t)
    return {"step": "append", "prompts": count, "commits": len(times), "commit_s_median": statistics.median(times),
            "edge_rows": rows, "commit_rows_per_s": rows / sum(times), "load_avg": os.getloadavg()[0]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path)
    parser.add_argument("--prompts", type=int, default=60000, help="prompts the database was generated with")
    parser.add_argument("--new-prompts", type=int, default=2900)
    parser.add_argument("--supports", default="6000,600,60")
    parser.add_argument("--check", default="600,60", help="supports also run by the full search")
    parser.add_argument("--memory-limit", default="6GB")
    parser.add_argument("--skip-queries", action="store_true", help="only append and compact")
    args = parser.parse_args()
    os.environ["FEATUREGRAPH_COMPACT_ROWS"] = "0"
    from featuregraph.store import chain_pairs, summary
    from featuregraph.store.db import open_database
    from featuregraph.store.summary import base_rows, delta_rows, fold_delta

    supports = [] if args.skip_queries else [int(s) for s in args.supports.split(",")]
    check = {int(s) for s in args.check.split(",") if s}
    update_s: list[float] = []
    update = summary.update_all_pairs

    def timed_update(db, runs):
        start = time.perf_counter()
        try:
            return update(db, runs)
        finally:
            update_s.append(time.perf_counter() - start)

    summary.update_all_pairs = timed_update
    with open_database(args.db) as db:
        db.execute(f"SET memory_limit = '{args.memory_limit}'")  # a benchmark argument, not user input
        queries(db, supports, check, "compacted")
        floors = "SELECT run_id, floor, full_floor, pairs, pair_rows, base_prompts FROM chain_pair_floors"
        before = db.fetchall(floors)
        if args.new_prompts:
            print(json.dumps(append_prompts(db, args.new_prompts, args.prompts)), flush=True)
        pending = {"step": "pending", "delta_rows": delta_rows(db), "base_rows": base_rows(db)}
        print(json.dumps(pending), flush=True)
        queries(db, supports, check, "delta pending")
        _, fold_s = timed(lambda: fold_delta(db))
        _, checkpoint_s = timed(lambda: db.execute("CHECKPOINT"))
        updated = db.fetchall(floors)
        floor = int(db.fetchone("SELECT floor FROM chain_pair_floors WHERE run_id = 1")[0])
        print_updated = db.fetchone(INDEX_PRINT, [floor])

        def rebuild() -> None:
            with db.transaction():
                chain_pairs.rebuild_pairs(db, 1)

        _, pairs_s = timed(rebuild)
        print(json.dumps({"step": "compaction", "delta_rows": pending["delta_rows"], "fold_s": fold_s[0],
                          "pair_update_s": update_s[0] if update_s else None, "checkpoint_s": checkpoint_s[0],
                          "pair_index_alone_s": pairs_s[0], "load_avg": os.getloadavg()[0],
                          "floors_before": before, "floors_updated": updated, "floors_full_count": db.fetchall(floors),
                          "update_equals_full_count_at_its_floor": db.fetchone(INDEX_PRINT, [floor]) == print_updated},
                         default=str), flush=True)  # fmt: skip
        queries(db, supports, set(), "after compaction")


if __name__ == "__main__":
    main()
