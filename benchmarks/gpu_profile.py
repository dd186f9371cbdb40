"""Where a GPU sweep's time goes: torch.profiler over one group of GPT-2-shaped prompts.

    python benchmarks/gpu_profile.py --device cuda --dtype bfloat16      # on a GPU
    python benchmarks/gpu_profile.py --device cpu --tokens 6 --shape tiny  # smoke

Prints wall time per prompt at several batch sizes, then, for the largest, the share of the
wall the device was busy (sum of kernel times / wall) and the top kernels and CPU-side ops.
A busy share far below 1 means the sweep is bound by the host (launches, syncs), not by the GPU.
"""

from __future__ import annotations

import argparse
import time

import torch
from gpu_check import prompts_of
from sweep_bench import SHAPES, build

from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.precision import cast
from featuregraph.ingest.sweep import Sweeper


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--shape", default="gpt2-shaped", choices=sorted(SHAPES))
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--group", type=int, default=8, help="prompts per sweep_many call")
    ap.add_argument("--batches", default="256,1024,4096")
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    model, sites = build(shape, args.device)
    model, sites = cast(model, sites, args.dtype)
    prompts = prompts_of(3 * args.group, args.tokens, shape["d_vocab"], seed=args.tokens)
    batches = [int(b) for b in args.batches.split(",")]
    for batch in batches:
        sweeper = Sweeper(model, sites, SweepConfig(batch_size=batch), True)
        sweeper.sweep_many(prompts[: args.group])  # warm-up
        _sync(args.device)
        t = time.perf_counter()
        results = sweeper.sweep_many(prompts[args.group : 2 * args.group])
        _sync(args.device)
        wall = time.perf_counter() - t
        n_abl = sum(r.n_ablations for r in results)
        print(f"batch {batch}: {wall / args.group * 1e3:.0f} ms per prompt, {n_abl / wall:,.0f} ablations/s", flush=True)
    acts = [torch.profiler.ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=acts) as prof:
        t = time.perf_counter()
        sweeper.sweep_many(prompts[2 * args.group :])
        _sync(args.device)
        wall = time.perf_counter() - t
    events = prof.key_averages()
    dev_attr = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    busy = sum(getattr(e, dev_attr, 0) for e in events) / 1e6
    print(f"profiled group: wall {wall:.3f} s, device busy {busy:.3f} s ({100 * busy / wall:.0f}%)")
    if args.device.startswith("cuda"):
        print(events.table(sort_by=dev_attr.replace("_total", "_total"), row_limit=22, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
