"""Error of bfloat16 / float16 sweeps against float32 (ingest/precision.py), on the demo or the GPT-2-shaped model.

    python benchmarks/precision_bench.py demo --prompts 16
    python benchmarks/precision_bench.py gpt2-shaped --prompts 1 --tokens 8

Prints one JSON line per dtype (also appended to benchmarks/results/precision_*.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from sweep_bench import SHAPES, SampledSweeper, build, load_demo

from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.precision import cast, compare, within_tolerance
from featuregraph.ingest.sweep import PromptInput


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=["demo", "gpt2-shaped", "tiny"])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=8, help="tokens after BOS (synthetic models)")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--sample", type=int, default=1, help="ablate 1 in N features (same ones in every dtype)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.shape == "demo":
        loaded, prompts = load_demo(args.device, n_prompts=args.prompts)
        model, sites = loaded.model, loaded.sites
    else:
        shape = SHAPES[args.shape]
        model, sites = build(shape, args.device)
        toks = syn.random_tokens(args.prompts, args.tokens + 1, shape["d_vocab"], bos=0, seed=7)
        prompts = [PromptInput(i, "", toks[i].tolist()) for i in range(args.prompts)]
    config = SweepConfig()
    t = time.perf_counter()
    ref = SampledSweeper(model, sites, config, True, every=args.sample).sweep_many(prompts)
    ref_s = time.perf_counter() - t
    for dtype in args.dtypes:
        low_model, low_sites = cast(model, sites, dtype)
        t = time.perf_counter()
        low = SampledSweeper(low_model, low_sites, config, True, every=args.sample).sweep_many(prompts)
        m = compare(ref, low)
        line = json.dumps({"shape": args.shape, "dtype": dtype, "prompts": len(prompts), "sample_1_in": args.sample, "device": args.device,
                           **{k: round(v, 5) for k, v in m.items()}, "outside_tolerance": within_tolerance(m, dtype),
                           "float32_s": round(ref_s, 2), "low_s": round(time.perf_counter() - t, 2),
                           "load": [round(x, 2) for x in os.getloadavg()]})  # fmt: skip
        print(line, flush=True)
        with (Path(__file__).parent / "results" / f"precision_{args.shape}_{args.device}.jsonl").open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
