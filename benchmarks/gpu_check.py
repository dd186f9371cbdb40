"""One short GPU check of the sweep (issue 14): prints one table. Run through benchmarks/gpu_check.sh.

    benchmarks/gpu_check.sh               # one GPU, <= 6 minutes
    benchmarks/gpu_check.sh --cpu-smoke   # CI-sized, on the CPU (tests/test_gpu_check.py)

Rows: the GPT-2-small-shaped sweep (random weights, 12 layers, 13 SAEs x 24,576, ~50 active
features per token) at 16 and 64 tokens in float32, bfloat16 (every pass) and delta-bfloat16 (prompts/s, ablations/s,
cost-model TFLOP/s against the GPU's peak, peak GPU memory); sweep alone against end-to-end
ingest into DuckDB (the writer thread); the bundled demo model. Each row runs for a time budget
after a warm-up; rows that would pass the overall deadline are printed as skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_bench import SHAPES, build, load_demo  # noqa: E402

from featuregraph.ingest import synthetic as syn  # noqa: E402
from featuregraph.ingest.config import SweepConfig  # noqa: E402
from featuregraph.ingest.delta import with_delta  # noqa: E402
from featuregraph.ingest.precision import cast  # noqa: E402
from featuregraph.ingest.sweep import PromptInput, Sweeper  # noqa: E402
from featuregraph.ingest.writer_thread import WriterThread  # noqa: E402

#: Dense tensor-core peaks (TFLOP/s) by GPU name fragment: (bf16, fp32 without TF32).
PEAKS = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5), "L40S": (362.0, 91.6), "A10": (125.0, 31.2)}
SMOKE_SHAPE = dict(n_layers=3, d_model=32, n_heads=4, d_vocab=64, n_ctx=80, d_sae=48, active=4.0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_tflops(device: str, dtype: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name()
    for frag, (bf16, fp32) in PEAKS.items():
        if frag in name:
            return bf16 if dtype.removeprefix("delta-") in ("bfloat16", "float16") else fp32
    return None


def prompts_of(n: int, tokens: int, d_vocab: int, seed: int) -> list[PromptInput]:
    toks = syn.random_tokens(n, tokens, d_vocab, bos=0, seed=seed)
    return [PromptInput(i, "", toks[i].tolist()) for i in range(n)]


def timed(sweeper: Sweeper, prompts: list[PromptInput], group: int, budget_s: float, device: str, sink=None) -> dict:
    """Sweep groups of ``group`` prompts until ``budget_s`` passes (at least one group), after a warm-up group."""
    sweeper.sweep_many(prompts[:group])
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    flops0, n, n_abl, t = sweeper.flops, 0, 0, time.perf_counter()
    for start in range(group, len(prompts), group):
        results = sweeper.sweep_many(prompts[start : start + group])
        n, n_abl = n + len(results), n_abl + sum(r.n_ablations for r in results)
        if sink is not None:
            sink(results)
        if time.perf_counter() - t > budget_s:
            break
    _sync(device)
    s = time.perf_counter() - t
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return {"prompts": n, "s": s, "prompts_s": n / s, "abl_s": n_abl / s, "tflop_s": (sweeper.flops - flops0) / s / 1e12,
            "gflop_prompt": (sweeper.flops - flops0) / max(n, 1) / 1e9, "mem_gib": mem}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="CI-sized run on the CPU")
    ap.add_argument("--device", default=None)
    ap.add_argument("--budget", type=float, default=None, help="seconds per row (default 25 on a GPU, 0 in the smoke)")
    ap.add_argument("--deadline", type=float, default=330.0, help="skip rows that would start after this many seconds")
    args = ap.parse_args()
    t_start = time.perf_counter()
    smoke = args.cpu_smoke
    device = args.device or ("cpu" if smoke else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible to torch (use --cpu-smoke on a machine without a GPU)")
    budget = args.budget if args.budget is not None else (0.0 if smoke else 25.0)
    shape = SMOKE_SHAPE if smoke else SHAPES["gpt2-shaped"]
    lengths = (6, 12) if smoke else (16, 64)
    n_prompts = 1 if smoke else 400
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "none (CPU)"
    print(f"gpu_check: device {device}, GPU {gpu}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    t = time.perf_counter()
    model, sites = build(shape, device)
    print(f"built the {'smoke' if smoke else 'GPT-2-small'}-shaped model and {len(sites)} SAEs in {time.perf_counter() - t:.0f} s", flush=True)

    rows = []
    header = "| run | tokens | dtype | prompts/s | ablations/s | GFLOP/prompt | TFLOP/s | % of peak | peak GPU GiB |"
    low = {}
    for tokens in lengths:
        for dtype in ("float32", "bfloat16", "delta-bfloat16"):
            name = f"gpt2-shaped sweep{' (smoke)' if smoke else ''}"
            if time.perf_counter() - t_start > args.deadline:
                rows.append(f"| {name} | {tokens} | {dtype} | skipped (deadline) | | | | | |")
                continue
            if dtype not in low:
                # delta mode: the float32 model, linear maps on the ablation's difference in bf16 (ingest/delta.py)
                low[dtype] = (model, sites) if dtype in ("float32", "delta-bfloat16") else cast(model, sites, dtype)
            m, s = low[dtype]
            batch = (1024 if tokens <= 16 else 256) if device.startswith("cuda") else 64
            sweeper = Sweeper(m, s, SweepConfig(batch_size=batch), True)
            if dtype == "delta-bfloat16":
                sweeper = with_delta(sweeper, "bfloat16")
            group = 1 if smoke else (8 if tokens <= 16 else 2)
            r = timed(sweeper, prompts_of(n_prompts + group, tokens, shape["d_vocab"], seed=tokens), group, budget, device)
            peak = peak_tflops(device, dtype)
            pct = f"{100 * r['tflop_s'] / peak:.1f}" if peak else "n/a"
            rows.append(f"| {name} | {tokens} | {dtype} | {r['prompts_s']:.3g} | {r['abl_s']:.4g} | {r['gflop_prompt']:.4g} | "
                        f"{r['tflop_s']:.3g} | {pct} | {r['mem_gib']:.2f} |")  # fmt: skip
            print(rows[-1], flush=True)

    # Sweep alone against sweep + writes to DuckDB through the writer thread (the store's own write).
    from featuregraph.store.db import open_database
    from featuregraph.store.runs import write_prompt_results

    dtype, tokens = ("bfloat16" if device.startswith("cuda") else "float32"), lengths[0]
    if time.perf_counter() - t_start <= args.deadline:
        m, s = low.get(dtype) or (model, sites)
        batch = 1024 if device.startswith("cuda") else 64
        group = 1 if smoke else 8
        ps = prompts_of(n_prompts + group, tokens, shape["d_vocab"], seed=99)
        alone = timed(Sweeper(m, s, SweepConfig(batch_size=batch), True), ps, group, budget, device)
        with tempfile.TemporaryDirectory() as tmp:
            db = open_database(Path(tmp) / "check.duckdb")
            try:
                with WriterThread(lambda batch_: write_prompt_results(db, 1, batch_)) as writer:
                    e2e = timed(Sweeper(m, s, SweepConfig(batch_size=batch), True), ps, group, budget, device, sink=writer.submit)
                    t_close = time.perf_counter()
                e2e_s = e2e["s"] + (time.perf_counter() - t_close)  # the last writes count too
                edges = db.fetchone("SELECT count(*) FROM edges")[0]
            finally:
                db.close()
        rows.append(f"| sweep alone | {tokens} | {dtype} | {alone['prompts_s']:.3g} | {alone['abl_s']:.4g} | | | | |")
        rows.append(f"| sweep + DuckDB writes (writer thread) | {tokens} | {dtype} | {e2e['prompts'] / e2e_s:.3g} | | | | | "
                    f"|  (waited {writer.wait_s:.2f} s on the writer, {writer.write_s:.2f} s writing, {edges} edges)")  # fmt: skip
    else:
        rows.append("| sweep alone / + DuckDB writes | | | skipped (deadline) | | | | | |")

    if time.perf_counter() - t_start <= args.deadline:
        loaded, demo_prompts = load_demo(device, n_prompts=2 if smoke else 300)
        r = timed(Sweeper(loaded.model, loaded.sites, SweepConfig(batch_size=64 if smoke else 1024), loaded.prepend_bos),
                  demo_prompts, 1 if smoke else 8, budget, device)  # fmt: skip
        rows.append(f"| demo model | mean {sum(len(p.token_ids) for p in demo_prompts) / len(demo_prompts):.1f} | float32 | "
                    f"{r['prompts_s']:.3g} | {r['abl_s']:.4g} | {r['gflop_prompt']:.3g} | {r['tflop_s']:.3g} | | {r['mem_gib']:.2f} |")  # fmt: skip
    else:
        rows.append("| demo model | | float32 | skipped (deadline) | | | | | |")

    print()
    print(f"GPU: {gpu}; torch {torch.__version__}; total {time.perf_counter() - t_start:.0f} s")
    print(header)
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
