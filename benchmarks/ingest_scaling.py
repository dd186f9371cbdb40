"""Distributed ingest throughput: prompts/s with 1, 2 and 4 Ray workers against the single process.

    python benchmarks/ingest_scaling.py                     # CPU workers, the tiny test model
    python benchmarks/ingest_scaling.py --workers 1 2 4 --prompts 256
    python benchmarks/ingest_scaling.py --device cuda       # one worker per GPU (needs GPUs)

Builds the tiny test model (2 layers, d_model 32, three 64-wide SAEs, random weights) in a
temporary folder and ingests the same prompts into a fresh database each time:

- ``single``: ``featuregraph ingest`` without ``--workers`` (model already loaded: sweep + writes);
- ``workers=N``: ``ingest_distributed`` with N warm workers (each has loaded the model), so the
  number is the steady state: sweeping, Parquet shards, merging. Worker start-up (process,
  imports, model load) is reported apart, as ``startup_s``.

Prints one JSON line per configuration and appends them to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import ModelSpec, RunConfig, SaeSpec
from featuregraph.ingest.loading import load_model

HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
WORDS = "the quick brown fox jumps over a lazy dog while Mary and John went to the store copyright".split()


def build_assets(root: Path) -> RunConfig:
    syn.save_hf_model(root / "model", n_layers=2, d_model=32, n_ctx=32, seed=0)
    flags = {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}
    model, _ = load_model(ModelSpec(str(root / "model")), flags, "cpu", "float32")
    tokens = model.to_tokens(syn.TOKENIZER_TEXT)
    for i, hook in enumerate(HOOKS):
        x = syn.sample_residuals(model, hook, tokens[:, 1:])
        syn.make_sae(hook, 32, 64, x, 0.1, seed=i, model_name="tiny").save_model(root / f"sae{i}")
    return RunConfig(
        model=ModelSpec(str(root / "model")),
        saes=tuple(SaeSpec(path=str(root / f"sae{i}")) for i in range(len(HOOKS))),
    )


def write_prompts(path: Path, n: int) -> Path:
    lines = []
    for i in range(n):
        k = 2 + (i * 7) % 4
        lines.append(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(k)) + f" {i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--prompts", type=int, default=192)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--commit-every", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ingest_scaling_cpu.jsonl")
    args = ap.parse_args()

    import ray

    from featuregraph.ingest.distributed import WorkerPool, ingest_distributed
    from featuregraph.ingest.run import ingest

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="fg-scaling-"))
    config = build_assets(tmp)
    if args.device != "cpu":
        config = RunConfig(config.model, config.saes, device=args.device)
    prompts = write_prompts(tmp / "prompts.txt", args.prompts)
    common = {
        "prompts": args.prompts,
        "device": args.device,
        "cpu_cores": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "ray": ray.__version__,
    }
    rows = []

    ingest(tmp / "warm.duckdb", prompts, config, progress=False, too_long="truncate")  # warm up imports and caches
    t = time.perf_counter()
    s = ingest(tmp / "single.duckdb", prompts, config, progress=False, commit_every=args.commit_every, too_long="truncate")
    rows.append({"config": "single", "workers": 0, "seconds": round(time.perf_counter() - t, 2),
                 "prompts_per_s": round(s.n_swept / (time.perf_counter() - t), 1), **common})  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)

    ray.init(num_cpus=max(max(args.workers), os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    try:
        for n in args.workers:
            t = time.perf_counter()
            pool = WorkerPool(config, workers=n)
            pool.ready()
            startup = time.perf_counter() - t
            try:
                db = tmp / f"workers{n}.duckdb"
                t = time.perf_counter()
                s = ingest_distributed(
                    db, prompts, config, pool=pool, progress=False, commit_every=args.commit_every, too_long="truncate"
                )
                seconds = time.perf_counter() - t
            finally:
                pool.shutdown()
            rows.append({"config": f"workers={n}", "workers": n, "seconds": round(seconds, 2),
                         "prompts_per_s": round(s.n_swept / seconds, 1), "startup_s": round(startup, 1), **common})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
