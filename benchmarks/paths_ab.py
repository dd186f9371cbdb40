"""recurring_paths(top := N) before and after migration 0016, on the same data, back to back.

    python benchmarks/paths_ab.py DB --supports 200 20 2 --edges 3 --top 100

DB must be at migration 0016 or later (open it once for writing to upgrade it). The script
copies it to DB.before and, in the copy, puts back migration 0011's definitions of
recurring_paths, fg_chains_at, fg_chain_bound and fg_path_occurrences (each ladder step
reading edge_summary and edge_occurrences again); then for each case it runs the query once on
each file as a warm-up and twice timed (before, then after), printing best / worst seconds, rows, the
last row's support and the 1-minute load average. Plain DuckDB, read-only (the copy aside).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import time
from pathlib import Path

import duckdb

OLD = Path(__file__).resolve().parent.parent / "migrations" / "0011_top_paths.sql"
RESTORED = ("fg_path_occurrences", "fg_chain_bound", "fg_chains_at", "recurring_paths")
MACRO = re.compile(r"CREATE (OR REPLACE )?MACRO (\w+)\(")


def make_before(db: Path) -> Path:
    """A copy of ``db`` with 0011's path macros in place of 0016's."""
    before = Path(str(db) + ".before")
    shutil.copy(db, before)
    con = duckdb.connect(str(before))
    for stmt in OLD.read_text().split(";\n"):
        body = "\n".join(line for line in stmt.splitlines() if not line.strip().startswith("--"))
        m = MACRO.search(body)
        if m and m.group(2) in RESTORED:
            con.execute(MACRO.sub(lambda x: f"CREATE OR REPLACE MACRO {x.group(2)}(", body, count=1))
    con.close()
    return before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", type=Path)
    ap.add_argument("--supports", type=int, nargs="+", default=[200, 20, 2])
    ap.add_argument("--edges", type=int, nargs="+", default=[3])
    ap.add_argument("--top", default="100", help="a number, or NULL for every path")
    ap.add_argument("--min-rel-weight", type=float, default=0.0)
    args = ap.parse_args()
    cons = {"before (0011)": duckdb.connect(str(make_before(args.db)), read_only=True),
            "after (0016)": duckdb.connect(str(args.db), read_only=True)}  # fmt: skip
    print("| macros | n_edges | min_support | top | best / worst s | rows | last support | load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    sql = ("SELECT support FROM recurring_paths(n_edges := $n, min_support := $s, top := $top, "
           "min_rel_weight := $rel)")  # fmt: skip
    top = None if args.top.upper() == "NULL" else int(args.top)
    for n in args.edges:
        for s in args.supports:
            params = {"n": n, "s": s, "top": top, "rel": args.min_rel_weight}
            for name, con in cons.items():
                con.execute(sql, params).fetchall()  # warm-up
                times = []
                for _ in range(2):
                    start = time.perf_counter()
                    rows = con.execute(sql, params).fetchall()
                    times.append(time.perf_counter() - start)
                last = rows[-1][0] if rows else "-"
                print(f"| {name} | {n} | {s} | {args.top} | {min(times):.2f} / {max(times):.2f} | {len(rows)} | "
                      f"{last} | {os.getloadavg()[0]:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
