"""Attention-output SAEs for the bundled model: one per block, on ``blocks.L.attn.hook_z``.

Usage::

    python -m featuregraph.demo.attn_saes              # train them for demo/assets (model already there)
    python -m featuregraph.demo.attn_saes --out DIR    # for the model in DIR/model

They read the concatenated head outputs (``n_heads * d_head`` = 128 wide for the demo model),
flattened head-major as sae_lens does for hook_z SAEs, and are saved with
``reshape_activations = "hook_z"`` so ``HookedSAETransformer`` can splice them in directly. The
training recipe is the residual SAEs' (:mod:`demo.sae_training`: sae_lens ``SAETrainer``,
BatchTopK training saved as JumpReLU), on activations of the same kind of training documents.
The folders go to ``assets/attn_saes/blocks.L.attn.hook_z``, apart from the residual SAEs, so
everything that loads "the demo SAEs" keeps meaning the residual ones; ``featuregraph demo``
adds them in a second, mixed-site run. Quality (explained variance, L0, dead fraction, and the
cross-entropy with each spliced in alone) lands in the manifest under ``attn_saes``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from featuregraph.demo import ASSETS_DIR
from featuregraph.demo.config import TrainConfig, attn_hook_names
from featuregraph.demo.corpus import CorpusGenerator
from featuregraph.demo.loading import load_attn_saes, load_hooked_model
from featuregraph.demo.metrics import cross_entropy, encode_contexts, sae_stats
from featuregraph.demo.sae_training import sae_rows, train_saes

logger = logging.getLogger("featuregraph.demo.attn_saes")

#: Seed offset of the attention SAEs' initialisation and batch order (the residual SAEs use
#: ``seed + 100`` onward, one per site).
SEED_OFFSET = 200


def train_attn_saes(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """Train, save and evaluate one hook_z SAE per block of the model in ``out / "model"``.

    Returns the manifest section (config, per-SAE metrics, seconds); the caller writes it.
    """
    torch.set_num_threads(cfg.torch_threads)
    model = load_hooked_model(out / "model")
    hooks = attn_hook_names(model.cfg.n_layers)
    ambiguity = bool(cfg.corpus_ambiguity)
    # The same training stream as the residual SAEs (seed + 2), the same held-out documents.
    rows = sae_rows(CorpusGenerator(cfg.seed + 2, "train", ambiguity=ambiguity), model.tokenizer, cfg,
                    cfg.sae_activation_tokens)  # fmt: skip
    started = time.perf_counter()
    torch.set_num_threads(cfg.sae_torch_threads)
    train_saes(cfg, model, hooks, rows, out / "attn_saes", seed=cfg.seed + SEED_OFFSET)
    torch.set_num_threads(cfg.torch_threads)
    train_s = time.perf_counter() - started

    # The residual SAEs' held-out documents: drawn after the task prompts and noise contexts,
    # as demo.train draws them.
    held = CorpusGenerator(cfg.seed + 1, "heldout", ambiguity=ambiguity)
    held.balanced(cfg.eval_prompts_per_task)
    held.balanced(cfg.noise_contexts, tags=("filler",))
    docs = held.take(cfg.eval_docs, cfg.train_mix())
    tokens, valid = encode_contexts(model.tokenizer, [e.text for e in docs])
    saes = load_attn_saes(out)
    stats = sae_stats(model, saes, tokens, valid)
    clean = cross_entropy(model, tokens, valid)
    single = {hook: cross_entropy(model, tokens, valid, [sae]) for hook, sae in saes.items()}
    return {
        "hook_names": hooks,
        "folder": "attn_saes",
        "input": "blocks.L.attn.hook_z, heads flattened head-major (n_heads * d_head); "
        "cfg reshape_activations = hook_z",
        "architecture": cfg.sae_architecture,
        "target_l0": cfg.sae_target_l0,
        "width": cfg.sae_width,
        "metrics": {
            hook: {**stats[hook], "ce_single_spliced": round(single[hook], 4)} for hook in hooks
        },
        "ce_clean": round(clean, 4),
        "timings_s": {"training": round(train_s, 1), "total": round(time.perf_counter() - started, 1)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSETS_DIR, help="assets folder holding model/ and manifest.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # The residual SAEs' recipe, recorded with the model, applies verbatim.
    cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in manifest["config"].items()})
    section = train_attn_saes(cfg, args.out)
    for hook, m in section["metrics"].items():
        logger.info("attn sae %-22s EV %.3f  L0 %.1f  dead %.3f  CE alone %.4f (clean %.4f)", hook,
                    m["explained_variance"], m["mean_l0"], m["dead_fraction"], m["ce_single_spliced"],
                    section["ce_clean"])  # fmt: skip
    manifest["attn_saes"] = section
    manifest["asset_size_bytes"] = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
