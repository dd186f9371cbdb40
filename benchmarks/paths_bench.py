"""Top-k recurring paths: time ``recurring_paths(top := N)`` on an existing database.

    python benchmarks/paths_bench.py /tmp/demo.duckdb                      # 3-edge, top 100, supports 2 3 10 30
    python benchmarks/paths_bench.py DB --supports 2 3 --edges 2 3 --top 100 --repeat 3

Opens DB read-only (copy a shared database first: a read-only open still takes the file's lock).
Each case runs ``repeat`` times after one warm-up run; prints the median and the best with the
1-minute load average before and after (figures under load are not truths), the search threshold
the pilot chose (the top-th support), and the number of rows. ``--full`` also times the plain
enumeration (``top := NULL``) at the same support, for a ratio measured back to back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from featuregraph.query import api  # noqa: E402
from featuregraph.store.db import open_database  # noqa: E402


def timed(fn, repeat: int) -> tuple[list[float], object]:
    result = fn()  # warm-up: file cache, macro binding
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path)
    parser.add_argument("--supports", type=int, nargs="+", default=[2, 3, 10, 30])
    parser.add_argument("--edges", type=int, nargs="+", default=[3])
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rank-by", default="support")
    parser.add_argument("--full", action="store_true", help="also time top := NULL (every chain)")
    parser.add_argument("--min-rel-weight", type=float, default=0.0, help="the dashboard and CLI start from 0.1")
    args = parser.parse_args()
    with open_database(args.db, read_only=True) as db:
        edges = db.fetchone("SELECT count(*) FROM edges")[0]
        prompts = db.fetchone("SELECT count(*) FROM prompts")[0]
        print(f"{args.db}: {edges:,} edges, {prompts} prompts, {os.cpu_count()} CPUs")
        print("| query | median s | best s | rows | top-th support | load before / after |")
        print("| --- | ---: | ---: | ---: | ---: | --- |")
        for n_edges in args.edges:
            for support in args.supports:
                cases = [args.top] + ([None] if args.full else [])
                for top in cases:
                    load = os.getloadavg()[0]
                    times, frame = timed(
                        lambda t=top, n=n_edges, s=support: api.recurring_paths(
                            db, n, s, top=t, rank_by=args.rank_by, min_rel_weight=args.min_rel_weight
                        ),
                        args.repeat,
                    )
                    kth = frame["support"][-1] if frame.height else "-"
                    name = f"{n_edges}-edge, min_support {support}, top {top}, {args.rank_by}"
                    if args.min_rel_weight:
                        name += f", min_rel_weight {args.min_rel_weight}"
                    print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} | {frame.height:,} | "
                          f"{kth} | {load:.1f} / {os.getloadavg()[0]:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
