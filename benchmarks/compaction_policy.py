"""Compaction policy: the write cost per ingested row as the database grows, fixed threshold
against a threshold proportional to the base, measured back to back in one process.

    python benchmarks/compaction_policy.py --prompts 960 --floor 250000 --fraction 0.1

Each policy starts from an empty database and writes the same synthetic prompts
(synthetic_graphs.py ``demo_calibrated``, GPT-2-wide: nearly every edge is new, the worst case
for a compaction) in groups of ``--group`` through the ingest's writer
(``store.runs.write_prompt_results``), with automatic compaction on:

- ``fixed``: fold once the delta holds ``--floor`` rows (``FEATUREGRAPH_COMPACT_ROWS``; the
  store's default is 4 M, scaled down here so the run fits in minutes);
- ``proportional``: fold once it holds max(``--floor``, ``--fraction`` x the summary base's rows)
  (the store's rule, with its floor of 4 M scaled down the same way).

Per quarter of the ingest it prints the commit seconds and the compaction seconds per million
ingested edge rows and the compactions run. Amortised flat writes mean the last quarter costs
what the first does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from query_bench import RUN_ROW  # noqa: E402
from synthetic_graphs import demo_calibrated, generate  # noqa: E402
from write_scaling import _results  # noqa: E402


def ingest(db_path: Path, results: list, group: int, quarters: int = 4) -> list[dict]:
    """Write ``results`` in groups; per quarter: rows, commit s, fold s, folds, stored rows at the end."""
    import featuregraph.store.runs as runs
    from featuregraph.store.db import open_database
    from featuregraph.store.summary import maybe_fold

    fold_s = [0.0, 0]

    def timed_fold(db):
        start = time.perf_counter()
        rows = maybe_fold(db)
        if rows:
            fold_s[0] += time.perf_counter() - start
            fold_s[1] += 1
        return rows

    runs.maybe_fold = timed_fold
    for p in (db_path, Path(str(db_path) + ".wal")):
        p.unlink(missing_ok=True)
    out = []
    per_quarter = -(-len(results) // quarters)
    try:
        with open_database(db_path) as db:
            run = runs.create_run(db, "compaction-policy", RUN_ROW | {"n_prompts": len(results)}, [], [])
            for q in range(quarters):
                part = results[q * per_quarter : (q + 1) * per_quarter]
                rows, total = 0, 0.0
                fold_s[:] = [0.0, 0]
                for g in range(0, len(part), group):
                    chunk = part[g : g + group]
                    start = time.perf_counter()
                    runs.write_prompt_results(db, run, chunk)
                    total += time.perf_counter() - start
                    rows += sum(len(r.tables["edges"]["weight"]) for r in chunk)
                stored = int(db.fetchone("SELECT count(*) FROM edges")[0])
                out.append({"rows": rows, "commit_s": total - fold_s[0], "fold_s": fold_s[0], "folds": fold_s[1],
                            "stored_edges": stored, "load": os.getloadavg()[0]})  # fmt: skip
                print(json.dumps(out[-1]), flush=True)
    finally:
        runs.maybe_fold = maybe_fold
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=960)
    ap.add_argument("--group", type=int, default=16, help="prompts per transaction")
    ap.add_argument(
        "--floor", type=int, default=250_000, help="fixed threshold / floor of the proportional one"
    )
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--d-sae", type=int, default=24_576)
    ap.add_argument("--dir", default="/tmp/featuregraph_compaction_policy")
    ap.add_argument("--policies", default="fixed,proportional")
    args = ap.parse_args()
    from featuregraph.store import summary

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "staging" / "planted.json").exists():
        generate(work / "staging", demo_calibrated(args.prompts, d_sae=args.d_sae, chunk=args.prompts))
    results = _results(sorted(str(p) for p in (work / "staging" / "edges").glob("*.parquet")))
    report = {"prompts": len(results), "group": args.group, "floor": args.floor, "fraction": args.fraction}
    for policy in args.policies.split(","):
        if policy == "fixed":
            os.environ[summary.COMPACT_ROWS_ENV] = str(args.floor)
        else:
            os.environ.pop(summary.COMPACT_ROWS_ENV, None)
            os.environ[summary.COMPACT_FRACTION_ENV] = str(args.fraction)
            summary.DEFAULT_COMPACT_ROWS = args.floor  # the store's floor, scaled down with the data
        print(f"policy {policy}", flush=True)
        report[policy] = ingest(work / f"{policy}.duckdb", results, args.group)
        (work / f"{policy}.duckdb").unlink(missing_ok=True)
    (work / "compaction_policy.json").write_text(json.dumps(report, indent=1))
    print(
        "| policy | quarter | stored edges at end | commit s / M rows | compaction s / M rows | compactions | load |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for policy in args.policies.split(","):
        for i, q in enumerate(report[policy]):
            m = q["rows"] / 1e6
            print(f"| {policy} | {i + 1} | {q['stored_edges'] / 1e6:.1f} M | {q['commit_s'] / m:.2f} | "
                  f"{q['fold_s'] / m:.2f} | {q['folds']} | {q['load']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
