"""Sweep alone against end-to-end ingest into DuckDB, with and without the writer thread (issue 14, item 3).

    python benchmarks/ingest_overlap.py --prompts 48

The bundled demo model and its first ``--prompts`` task prompts; three timings in one process, back to
back: the sweep alone (same groups as ingest), ``ingest`` with background writes, ``ingest`` writing
inline. Prints one JSON line (also appended to benchmarks/results/ingest_overlap_cpu.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from sweep_bench import load_demo

from featuregraph.demo import MODEL_DIR, PROMPTS_PATH, sae_dirs
from featuregraph.ingest.config import ModelSpec, RunConfig, SaeSpec
from featuregraph.ingest.prompts import read_prompts
from featuregraph.ingest.run import _groups, ingest
from featuregraph.ingest.sweep import Sweeper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = read_prompts(PROMPTS_PATH)[: args.prompts]
    config = RunConfig(ModelSpec(str(MODEL_DIR)), tuple(SaeSpec(path=str(p)) for p in sae_dirs()), device="cpu")
    loaded, inputs = load_demo("cpu", n_prompts=args.prompts)
    sweeper = Sweeper(loaded.model, loaded.sites, config.sweep, loaded.prepend_bos)
    sweeper.sweep(inputs[0])  # warm-up
    load = [os.getloadavg()[0]]
    t = time.perf_counter()
    for group in _groups(inputs, 8):
        sweeper.sweep_many(group)
    sweep_s = time.perf_counter() - t
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in (True, False):
            summary = ingest(Path(tmp) / f"{mode}.duckdb", raw, config, progress=False, background_writes=mode)
            out["ingest_thread_s" if mode else "ingest_inline_s"] = round(summary.seconds, 2)
    load.append(os.getloadavg()[0])
    line = json.dumps({"prompts": len(inputs), "sweep_s": round(sweep_s, 2), **out,
                       "thread_over_sweep": round(out["ingest_thread_s"] / sweep_s, 3),
                       "inline_over_sweep": round(out["ingest_inline_s"] / sweep_s, 3),
                       "threads": torch.get_num_threads(), "load_1min": load})  # fmt: skip
    print(line)
    with (Path(__file__).parent / "results" / "ingest_overlap_cpu.jsonl").open("a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
