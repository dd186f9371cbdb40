"""Error of bfloat16 / float16 sweeps against float32 (ingest/precision.py), on the demo or the GPT-2-shaped model.

    python benchmarks/precision_bench.py demo --prompts 16
    python benchmarks/precision_bench.py gpt2-shaped --prompts 1 --tokens 15 --sample 64
    python benchmarks/precision_bench.py gpt2-shaped --device cuda --prompts 8 --tokens 15 --batch-size 1024 --modes delta full

``--modes``: ``delta`` (what ``--dtype`` runs where supported: float32 clean pass, linear maps of the
ablation's difference in the low dtype; ingest/delta.py) and/or ``full`` (every forward pass in the
low dtype, the behaviour before delta mode and still that of unsupported runs).
Prints one JSON line per dtype and mode (also appended to benchmarks/results/precision_*.jsonl).
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
from featuregraph.ingest.delta import with_delta
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
    ap.add_argument("--modes", nargs="+", default=["delta"], choices=["delta", "full"])
    ap.add_argument("--batch-size", type=int, default=SweepConfig().batch_size, help="ablations per forward (a GPU wants ~1024)")
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
    config = SweepConfig(batch_size=args.batch_size)
    ref, ref_s = timed(lambda: SampledSweeper(model, sites, config, True, every=args.sample), prompts, args.device)
    for dtype in args.dtypes:
        for mode in args.modes:
            if mode == "delta":
                low, low_s = timed(lambda d=dtype: with_delta(SampledSweeper(model, sites, config, True, every=args.sample), d), prompts, args.device)
            else:
                low_model, low_sites = cast(model, sites, dtype)
                low, low_s = timed(lambda m=low_model, s=low_sites: SampledSweeper(m, s, config, True, every=args.sample), prompts, args.device)
                del low_model, low_sites
            m = compare(ref, low)
            line = json.dumps({"shape": args.shape, "dtype": dtype, "mode": mode, "prompts": len(prompts), "sample_1_in": args.sample, "batch_size": args.batch_size,
                               "device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
                               **{k: round(v, 5) for k, v in m.items()}, "outside_tolerance": within_tolerance(m, dtype, mode),
                               "float32_s": round(ref_s, 2), "low_s": round(low_s, 2),
                               "load": [round(x, 2) for x in os.getloadavg()]})  # fmt: skip
            print(line, flush=True)
            out = Path(os.environ.get("PRECISION_OUT", Path(__file__).parent / "results"))
            out.mkdir(parents=True, exist_ok=True)
            with (out / f"precision_{args.shape}_{args.device.split(':')[0]}.jsonl").open("a") as f:
                f.write(line + "\n")


def timed(make, prompts, device: str):
    """The results of a sweeper made by ``make()`` over ``prompts`` and the seconds it took (after a short warm-up)."""
    sweeper = make()
    sweeper.sweep(PromptInput(-1, "", prompts[0].token_ids[:3]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    results = sweeper.sweep_many(prompts)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return results, time.perf_counter() - t

if __name__ == "__main__":
    main()
