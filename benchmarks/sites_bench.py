"""Mixed-site sweep speed on the bundled demo model, beside the residual-only sweep.

    python benchmarks/sites_bench.py --prompts 32

The demo has residual SAEs only, so this script adds one hook_z SAE per block, random and
calibrated on the demo's own hook_z activations (``synthetic.make_sae``) so that about as many
features fire per token as in the demo's residual SAEs (speed depends on shapes and on how many
features fire, not on what the features mean). Three sweeps of the same prompts, back to back:

- ``resid_fast``: the demo's residual SAEs, fast path (suffix reuse; ingest/sweep.py);
- ``resid_general``: the same SAEs forced onto the general path (ingest/mixed.py, hooks, suffix
  reuse on): what the path alone costs;
- ``mixed``: residual and hook_z SAEs at every block (res L, att L, ...), general path, edges to
  the next site of each kind;
- ``mixed_full``: the same without suffix reuse (every position recomputed): what reuse saves.

Prints one JSON line (with the load average before and after) and appends it to
benchmarks/results/sites_bench.jsonl. Timings exclude loading and one warm-up prompt.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from sweep_bench import load_demo, time_sweep

from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.loading import SaeSite
from featuregraph.ingest.sweep import Sweeper


def hook_z_sites(model, prompts, d_sae: int, active: float, seed: int = 0) -> list[SaeSite]:
    """One random hook_z SAE per block, calibrated on ``prompts`` so ``active`` features fire per token."""
    sites = []
    width = model.cfg.n_heads * model.cfg.d_head
    for layer in range(model.cfg.n_layers):
        hook = f"blocks.{layer}.attn.hook_z"
        x = torch.cat(
            [syn.sample_residuals(model, hook, torch.tensor([p.token_ids]))[1:] for p in prompts]
        )  # BOS left out
        sae = syn.make_sae(
            hook, width, d_sae, x, active / d_sae, seed=seed + layer, reshape_activations="hook_z"
        )
        sites.append(SaeSite(layer, hook, sae, {}, "attn_z"))
    return sites


def mean_l0(sites, sweeper: Sweeper, prompts) -> float:
    clean = sweeper.clean_pass(prompts)
    counts = [
        ((sweeper.site_acts(clean, k) != 0).sum(-1).float() * clean.real_mask).sum() / clean.real_mask.sum()
        for k in range(len(sites))
    ]
    return float(sum(counts) / len(counts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--prompts-per-forward", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded, inputs = load_demo(args.device, n_prompts=args.prompts)
    model, resid, prompts = loaded.model, loaded.sites, inputs[: args.prompts]
    config = SweepConfig(batch_size=args.batch_size)
    fast = Sweeper(model, resid, config, True)
    l0 = mean_l0(resid, fast, prompts[:8])
    att = hook_z_sites(model, prompts, resid[0].d_sae, l0)
    mixed_sites = sorted(resid + att, key=lambda s: s.order)
    general = Sweeper(model, resid, config, True)
    general.general = True  # the same SAEs through ingest/mixed.py
    mixed = Sweeper(model, mixed_sites, config, True)
    mixed_full = Sweeper(model, mixed_sites, config, True, suffix_reuse=False)
    load_before = os.getloadavg()
    res = {}
    for name, sw in (
        ("resid_fast", fast),
        ("resid_general", general),
        ("mixed", mixed),
        ("mixed_full", mixed_full),
    ):
        t = time_sweep(sw, prompts, args.prompts_per_forward, args.device)
        res[name] = {"s": t["s"], "prompts_per_s": round(len(prompts) / t["s"], 3),
                     "ablations_per_prompt": round(t["ablations"] / len(prompts), 1),
                     "gflop_per_prompt": round(t["flops"] / len(prompts) / 1e9, 3)}  # fmt: skip
    line = json.dumps({
        "model": "demo", "prompts": len(prompts), "tokens_per_prompt": round(sum(len(p.token_ids) for p in prompts) / len(prompts), 1),
        "resid_saes": len(resid), "hook_z_saes": len(att), "d_sae": resid[0].d_sae, "resid_l0": round(l0, 1),
        "hook_z_l0": round(mean_l0(att, Sweeper(model, att, config, True), prompts[:8]), 1),
        "batch_size": args.batch_size, "device": args.device, "torch_threads": torch.get_num_threads(), **res,
        "mixed_vs_resid_fast": round(res["resid_fast"]["s"] / res["mixed"]["s"], 3),
        "general_vs_fast_same_saes": round(res["resid_fast"]["s"] / res["resid_general"]["s"], 3),
        "mixed_suffix_speedup": round(res["mixed_full"]["s"] / res["mixed"]["s"], 3),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    })  # fmt: skip
    print(line)
    with (Path(__file__).parent / "results" / "sites_bench.jsonl").open("a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
