"""Sweep speed: the batched sweep against the plain reference, same model, SAEs and prompts.

    python benchmarks/sweep_bench.py tiny                      # the tiny test model
    python benchmarks/sweep_bench.py gpt2-shaped --prompts 2   # 12 layers, d_model 768, 24576-wide SAEs
    python benchmarks/sweep_bench.py gpt2-shaped --ab --prompts 1 --tokens 15 --batches 2 --threads 2
        # suffix reuse off then on, back to back, on every 2nd suffix batch of the whole prompt
        # (A on the same rows): wall time and cost-model FLOPs of each, the subset's FLOP ratio
        # next to the whole prompt's (planned_flops)
    python benchmarks/sweep_bench.py demo --ab --prompts 32 --no-reference   # the bundled demo model

Both use random weights: speed depends on shapes and on how many features are active,
not on what the weights mean. The GPT-2-shaped SAEs are calibrated so that about
``--active`` features fire per token, as in gpt2-small-res-jb. Prints one JSON line and
writes it to benchmarks/results/. Timings exclude model building and one warm-up prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.loading import SaeSite, residual_layer
from featuregraph.ingest.reference import reference_sweep
from featuregraph.ingest.suffix import BlockWeights, block_suffix
from featuregraph.ingest.sweep import PromptInput, Sweeper

SHAPES = {
    "tiny": dict(n_layers=3, d_model=32, n_heads=4, d_vocab=64, n_ctx=32, d_sae=48, active=4.0),
    "gpt2-shaped": dict(n_layers=12, d_model=768, n_heads=12, d_vocab=50257, n_ctx=1024, d_sae=24576, active=50.0),
}


def build(shape: dict, device: str, seed: int = 0):
    model = syn.make_model(
        n_layers=shape["n_layers"], d_model=shape["d_model"], n_heads=shape["n_heads"],
        d_vocab=shape["d_vocab"], n_ctx=shape["n_ctx"], seed=seed, device=device,
    )  # fmt: skip
    calib = syn.random_tokens(32, 17, shape["d_vocab"], bos=0, seed=seed + 1)
    hooks = [f"blocks.{i}.hook_resid_pre" for i in range(shape["n_layers"])]
    hooks.append(f"blocks.{shape['n_layers'] - 1}.hook_resid_post")
    density = shape["active"] / shape["d_sae"]
    sites = []
    for i, hook in enumerate(hooks):
        x = syn.sample_residuals(model, hook, calib).reshape(32, 17, -1)[:, 1:].reshape(-1, shape["d_model"])
        sae = syn.make_sae(hook, shape["d_model"], shape["d_sae"], x, density, seed=seed + 10 + i, device=device)
        sites.append(SaeSite(residual_layer(hook), hook, sae, {}))
    return model, sites


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load_demo(device: str, dtype: str = "float32", n_prompts: int = 32):
    """The bundled demo model, SAEs and its first ``n_prompts`` task prompts, tokenized."""
    from featuregraph.demo import MODEL_DIR, PROMPTS_PATH, sae_dirs
    from featuregraph.ingest.config import ModelSpec, RunConfig, SaeSpec
    from featuregraph.ingest.prompts import read_prompts
    from featuregraph.ingest.run import prepare_run

    config = RunConfig(ModelSpec(str(MODEL_DIR)), tuple(SaeSpec(path=str(p)) for p in sae_dirs()), device=device, dtype=dtype)
    prep = prepare_run(read_prompts(PROMPTS_PATH)[:n_prompts], config)
    return prep.loaded, prep.prompts.inputs


def time_sweep(sweeper: Sweeper, prompts: list[PromptInput], group: int, device: str) -> dict:
    """Sweep ``prompts`` in groups of ``group`` after a short warm-up: seconds, ablations, cost-model FLOPs."""
    sweeper.sweep(PromptInput(-1, "", prompts[0].token_ids[:3]))
    _sync(device)
    flops0, t, n_ablations = sweeper.flops, time.perf_counter(), 0
    for start in range(0, len(prompts), group):
        n_ablations += sum(r.n_ablations for r in sweeper.sweep_many(prompts[start : start + group]))
    _sync(device)
    seconds = time.perf_counter() - t
    return {"s": round(seconds, 3), "ablations": n_ablations, "flops": sweeper.flops - flops0}


class BatchSampleSweeper(Sweeper):
    """Sweeps only every ``every``-th suffix batch of the whole prompt group (ingest/grouping.py's plan,
    counted over all sites), the middle one of each run of ``every``; without suffix reuse the same rows
    with every position recomputed. Whole batches keep the suffix grouping as dense as the unsampled
    sweep's, so the subset's FLOP ratio is the prompt's (ab_run prints both). ``fused_full``: the full
    recompute runs through the suffix path's fused blocks (ingest/suffix.py) instead of the model's."""

    def __init__(self, *a, every: int = 1, fused_full: bool = False, **kw):
        super().__init__(*a, **kw)
        self.every, self.seen = every, 0
        if fused_full:
            self.weights = [BlockWeights.of(b) for b in self.model.blocks]
        self.fused_full = fused_full

    def _batch_slices(self, clean, p_all, f_all, removed_all):
        order, plans = self.suffix_plan(clean, p_all, removed_all)
        kept = []
        for plan in plans:
            self.seen += 1
            if self.seen % self.every == self.every // 2:
                kept.append(plan)
        if self.suffix_reuse:
            for plan in kept:
                sel = order[plan.lo : plan.hi]
                yield p_all[sel], f_all[sel], removed_all[sel, plan.start : plan.stop], plan.start, plan
            return
        if kept:
            sel = torch.cat([order[plan.lo : plan.hi] for plan in kept])
            for i in range(0, sel.shape[0], self.config.batch_size):
                rows = sel[i : i + self.config.batch_size]
                yield p_all[rows], f_all[rows], removed_all[rows], None, None

    def _blocks(self, resid, start, stop):
        if not self.fused_full:
            return super()._blocks(resid, start, stop)
        cfg = self.model.cfg
        empty = resid.new_zeros(1, 0, cfg.n_heads, cfg.d_head)
        for layer in range(start, stop):
            resid = block_suffix(self.model.blocks[layer], self.weights[layer], resid, empty, empty, fused=True)
        return resid


class SampledSweeper(Sweeper):
    """Ablates only a fixed random subset of each SAE's features (1 in ``every``): an unbiased sample
    of a prompt's ablations, for timing big models on slow machines. Same subset in A and B."""

    def __init__(self, *a, every: int = 1, **kw):
        super().__init__(*a, **kw)
        g = torch.Generator().manual_seed(0)
        self.keep = [(torch.rand(s.d_sae, generator=g) < 1.0 / every).to(self.device) for s in self.sites]

    def ablatable(self, clean, k, acts):
        return super().ablatable(clean, k, acts) * self.keep[k]


def ab_run(model, sites, prompts, args) -> dict:
    """Suffix reuse off (A) then on (B) on the same prompts, back to back, with the load average around them.
    ``--sample N``: only 1 in N features are ablated, per-prompt figures scaled back by N. ``--batches N``:
    every N-th suffix batch (A on the same rows); per-prompt figures scaled by the whole prompt's
    planned FLOPs over the subset's, and both FLOP ratios printed. ``--fused-baseline`` adds A', the
    full recompute through the suffix path's fused blocks (how much of B's gain is kernels, not reuse)."""
    from featuregraph.ingest.cost import planned_flops

    config = SweepConfig(batch_size=args.batch_size)
    group = args.prompts_per_forward
    load_before = os.getloadavg()
    if args.batches > 1:
        runs = {"A": dict(suffix_reuse=False), "B": {}}
        if args.fused_baseline:
            runs["A_fused"] = dict(suffix_reuse=False, fused_full=True)
        timed = {k: time_sweep(BatchSampleSweeper(model, sites, config, True, every=args.batches, **kw), prompts, group, args.device)
                 for k, kw in runs.items()}  # fmt: skip
        plan = {}
        for key, reuse in (("A", False), ("B", True)):
            sw = Sweeper(model, sites, config, True, suffix_reuse=reuse)
            plan[key] = sum(planned_flops(sw, prompts[i : i + group]) for i in range(0, len(prompts), group))
        plan["A_fused"] = plan["A"]
        scale = {k: plan[k] / timed[k]["flops"] for k in timed}  # subset -> whole prompt group
        n = len(prompts)
    else:
        kw = {"every": args.sample}
        timed = {"A": time_sweep(SampledSweeper(model, sites, config, True, suffix_reuse=False, **kw), prompts, group, args.device),
                 "B": time_sweep(SampledSweeper(model, sites, config, True, **kw), prompts, group, args.device)}  # fmt: skip
        scale, n = {"A": 1.0, "B": 1.0}, len(prompts) / args.sample  # sampled ablations stand for 1/sample of the prompt
    a, b = timed["A"], timed["B"]
    out = {
        "prompts": len(prompts),
        "sample_1_in": args.sample,
        "batches_1_in": args.batches,
        "tokens_per_prompt": sum(len(p.token_ids) for p in prompts) / len(prompts),
        "ablations_per_prompt": round(a["ablations"] / (len(prompts) if args.batches > 1 else n), 1),
        "full_s_per_prompt": round(a["s"] * scale["A"] / n, 3),
        "suffix_s_per_prompt": round(b["s"] * scale["B"] / n, 3),
        "wall_ratio_subset": round(a["s"] / b["s"], 3),
        "wall_ratio_per_prompt": round(a["s"] * scale["A"] / (b["s"] * scale["B"]), 3),
        "full_gflop_per_prompt": round(a["flops"] * scale["A"] / n / 1e9, 3),
        "suffix_gflop_per_prompt": round(b["flops"] * scale["B"] / n / 1e9, 3),
        "flop_ratio_subset": round(a["flops"] / b["flops"], 3),
        "flop_ratio_prompt": round(a["flops"] * scale["A"] / (b["flops"] * scale["B"]), 3),
        "full_gflop_per_s": round(a["flops"] / a["s"] / 1e9, 2),
        "suffix_gflop_per_s": round(b["flops"] / b["s"] / 1e9, 2),
    }
    if "A_fused" in timed:
        af = timed["A_fused"]
        out.update(full_fused_s_per_prompt=round(af["s"] * scale["A_fused"] / n, 3),
                   wall_ratio_fused_baseline=round(af["s"] * scale["A_fused"] / (b["s"] * scale["B"]), 3),
                   full_fused_gflop_per_s=round(af["flops"] / af["s"] / 1e9, 2))  # fmt: skip
    out.update(load_before=[round(x, 2) for x in load_before], load_after=[round(x, 2) for x in os.getloadavg()])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=sorted(SHAPES) + ["demo"])
    ap.add_argument("--ab", action="store_true", help="suffix reuse off, then on: FLOPs and wall time of each")
    ap.add_argument("--plan", action="store_true", help="cost-model FLOPs per prompt, off and on, without sweeping")
    ap.add_argument("--sample", type=int, default=1, help="with --ab: ablate 1 in N features (estimates per prompt)")
    ap.add_argument("--batches", type=int, default=1, help="with --ab: time every N-th suffix batch (A on the same rows)")
    ap.add_argument("--fused-baseline", action="store_true", help="with --ab --batches: also A through the fused blocks")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=8, help="tokens per prompt after BOS")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--prompts-per-forward", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-reference", action="store_true", help="time only the sweep (e.g. big GPU runs)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.shape == "demo":
        loaded, inputs = load_demo(args.device, n_prompts=args.prompts + 1)
        model, sites, prompts = loaded.model, loaded.sites, inputs
        shape = {"n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model, "d_vocab": model.cfg.d_vocab, "d_sae": sites[0].d_sae}
    else:
        shape = SHAPES[args.shape]
        model, sites = build(shape, args.device)
        toks = syn.random_tokens(args.prompts + 1, args.tokens + 1, shape["d_vocab"], bos=0, seed=7)
        prompts = [PromptInput(i, "", toks[i].tolist()) for i in range(args.prompts + 1)]
    build_s = time.perf_counter() - t0
    if args.plan:
        from featuregraph.ingest.cost import planned_flops

        timed = prompts[: args.prompts]
        res = {}
        for reuse in (False, True):
            for b in sorted({args.batch_size, 1}):
                sw = Sweeper(model, sites, SweepConfig(batch_size=b), True, suffix_reuse=reuse)
                f = sum(planned_flops(sw, [p]) for p in timed) / len(timed)
                res[f"{'suffix' if reuse else 'full'}_gflop_per_prompt_batch{b}"] = round(f / 1e9, 3)
        line = json.dumps({"shape": args.shape, "mode": "plan", "prompts": len(timed), **res, "build_s": round(build_s, 1)})
        print(line)
        with (Path(__file__).parent / "results" / f"sweep_plan_{args.shape}.jsonl").open("a") as f:
            f.write(line + "\n")
        return
    if args.ab:
        timed = prompts[: args.prompts]
        line = json.dumps({"shape": args.shape, "mode": "suffix-ab", "device": args.device,
                           "torch_threads": torch.get_num_threads(), **ab_run(model, sites, timed, args)})  # fmt: skip
        print(line)
        with (Path(__file__).parent / "results" / f"sweep_ab_{args.shape}_{args.device.replace(':', '')}.jsonl").open("a") as f:
            f.write(line + "\n")
        return
    sweeper = Sweeper(model, sites, SweepConfig(batch_size=args.batch_size), prepend_bos=True)

    sweeper.sweep(prompts[-1])  # warm-up
    _sync(args.device)
    t = time.perf_counter()
    n_ablations = 0
    group = args.prompts_per_forward
    for start in range(0, args.prompts, group):
        n_ablations += sum(r.n_ablations for r in sweeper.sweep_many(prompts[start : min(start + group, args.prompts)]))
    _sync(args.device)
    sweep_s = time.perf_counter() - t

    result = {
        "shape": args.shape,
        **{k: shape[k] for k in ("n_layers", "d_model", "d_vocab", "d_sae")},
        "n_saes": len(sites),
        "prompts": args.prompts,
        "tokens_after_bos": args.tokens,
        "ablations": n_ablations,
        "ablations_per_prompt": n_ablations / args.prompts,
        "batch_size": args.batch_size,
        "prompts_per_forward": args.prompts_per_forward,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "sweep_s": round(sweep_s, 3),
        "sweep_prompts_per_s": round(args.prompts / sweep_s, 4),
        "build_s": round(build_s, 1),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
    }
    print(json.dumps({k: result[k] for k in ("shape", "ablations", "sweep_s", "sweep_prompts_per_s")}), flush=True)
    if not args.no_reference:
        reference_sweep(model, sites, prompts[-1].token_ids, 0.0, True)  # warm-up
        _sync(args.device)
        t = time.perf_counter()
        for p in prompts[:-1]:
            reference_sweep(model, sites, p.token_ids, 0.0, True)
        _sync(args.device)
        ref_s = time.perf_counter() - t
        result.update(
            reference_s=round(ref_s, 3),
            reference_prompts_per_s=round(args.prompts / ref_s, 4),
            speedup=round(ref_s / sweep_s, 2),
        )
    line = json.dumps(result)
    print(line)
    out = Path(__file__).parent / "results" / f"sweep_{args.shape}_{args.device.replace(':', '')}.jsonl"
    with out.open("a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
