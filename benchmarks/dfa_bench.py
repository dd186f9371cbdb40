"""Seconds per prompt of DFA (ingest/dfa.py) at GPT-2-small width: a 2-block random model with
12 heads of 64, an attention-output SAE and a residual SAE of 24,576 features each, their encoder
biases set so that about ``--attn-active`` attention features fire at the read position and about
``--resid-active`` residual features at each source.

    python benchmarks/dfa_bench.py --tokens 64

Prints one JSON line per setting (recursion off, then on).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import SimpleNamespace

import torch

from featuregraph.ingest.dfa import DfaSettings
from featuregraph.ingest.dfa_run import prompt_dfa


def _sae(hook: str, reshape: str, d_sae: int) -> object:
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(hook_name=hook, prepend_bos=True, model_name="bench", context_size=128)
    sae = StandardSAE(StandardSAEConfig(d_in=768, d_sae=d_sae, reshape_activations=reshape, metadata=meta))
    with torch.no_grad():
        sae.W_enc.normal_(0, 768**-0.5)
        sae.W_dec.normal_(0, 0.1)
    return sae.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--attn-active", type=int, default=60)
    ap.add_argument("--resid-active", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=1000,
                                  n_ctx=128, act_fn="gelu_new", normalization_type="LNPre", seed=0)  # fmt: skip
    model = HookedSAETransformer(cfg).eval()
    attn = _sae("blocks.1.attn.hook_z", "hook_z", args.d_sae)
    resid = _sae("blocks.1.hook_resid_pre", "none", args.d_sae)
    tokens = torch.randint(1, 1000, (1, args.tokens))
    tokens[0, 0] = 0
    with torch.no_grad():
        _, c = model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_z", "blocks.1.hook_resid_pre"])
        pre = (c["blocks.1.attn.hook_z"][0, -1].reshape(-1) - attn.b_dec) @ attn.W_enc
        attn.b_enc.copy_(-torch.quantile(pre, 1 - args.attn_active / args.d_sae))
        pre = (c["blocks.1.hook_resid_pre"][0, 1:] - resid.b_dec) @ resid.W_enc
        resid.b_enc.copy_(-torch.quantile(pre, 1 - args.resid_active / args.d_sae, dim=0))
    sites = [SimpleNamespace(hook_name="blocks.1.hook_resid_pre", sae=resid),
             SimpleNamespace(hook_name="blocks.1.attn.hook_z", sae=attn)]  # fmt: skip
    for settings in (DfaSettings(recurse=0), DfaSettings()):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            rows = prompt_dfa(model, sites, tokens[0].tolist(), args.tokens - 1, settings)
            times.append(time.perf_counter() - start)
        print(json.dumps({"recurse": settings.recurse, "tokens": args.tokens, "d_sae": args.d_sae,
                          "features": len(rows["dfa_features"]["feature"]), "rows": len(rows["dfa_parts"]["value"]),
                          "s_per_prompt": round(min(times), 3), "torch_threads": torch.get_num_threads(),
                          "load_average": round(os.getloadavg()[0], 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
