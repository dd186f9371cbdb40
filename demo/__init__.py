"""Bundled toy model, SAEs and prompt sets for trying featuregraph offline.

The assets under ``demo/assets`` are produced by ``python -m featuregraph.demo.train`` (a
seeded, CPU-only script): a 4-layer GPT-2-style model trained on a synthetic
corpus (:mod:`demo.corpus`) whose tasks echo the behaviours studied on GPT-2
small (closing brackets, completing acronyms, indirect object identification),
plus one SAE per residual-stream site and one per block's attention output
(see the manifest for how they were trained).

This module only defines paths, so importing it is cheap (no torch import).
Use :mod:`demo.loading` to load the model and SAEs.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = [
    "ASSETS_DIR",
    "MANIFEST_PATH",
    "MODEL_DIR",
    "NOISE_CORPUS_PATH",
    "HELDOUT_PATH",
    "PROMPTS_PATH",
    "SAES_DIR",
    "attn_sae_dirs",
    "sae_dirs",
]

DEMO_DIR: Path = Path(__file__).resolve().parent
#: Root of the committed artifacts written by ``python -m featuregraph.demo.train``.
ASSETS_DIR: Path = DEMO_DIR / "assets"
#: HF ``save_pretrained`` folder holding both the GPT-2-style model and its tokenizer.
MODEL_DIR: Path = ASSETS_DIR / "model"
#: One sae_lens folder per residual site, named after the hook (``blocks.0.hook_resid_pre``...).
SAES_DIR: Path = ASSETS_DIR / "saes"
#: One sae_lens folder per block's attention output (``blocks.0.attn.hook_z``...), see demo.attn_saes.
ATTN_SAES_DIR: Path = ASSETS_DIR / "attn_saes"
#: Training config, library versions and measured quality metrics.
MANIFEST_PATH: Path = ASSETS_DIR / "manifest.json"
#: Held-out task prompts, one JSON object per line: ``{"text", "tag", "answer"}``.
PROMPTS_PATH: Path = DEMO_DIR / "prompts.jsonl"
#: Further held-out task prompts, same format, never swept by ``featuregraph demo``: it
#: validates each task's top path on them.
HELDOUT_PATH: Path = DEMO_DIR / "heldout.jsonl"
#: Held-out filler contexts, one JSON object per line: ``{"text", "tag": "filler"}``.
NOISE_CORPUS_PATH: Path = DEMO_DIR / "noise_corpus.jsonl"
#: Filler records the demo sweeps as prompts (cut to HELDOUT_FILLER_WORDS words, tag
#: ``filler-heldout``) and the noise baseline never samples: the calibration check.
HELDOUT_FILLER = 40
HELDOUT_FILLER_WORDS = 16


def sae_dirs(assets_dir: Path = ASSETS_DIR) -> list[Path]:
    """Return the SAE folders in site order (earliest residual site first).

    Site order is ``blocks.0.hook_resid_pre``, ..., ``blocks.{L-1}.hook_resid_pre``,
    then ``blocks.{L-1}.hook_resid_post``, i.e. the order in which the residual
    stream is read during a forward pass. The list is taken from the manifest
    when it exists (it records the trained sites), otherwise from the folders
    present under ``assets_dir / "saes"``.

    Args:
        assets_dir: Assets root; defaults to the committed :data:`ASSETS_DIR`.

    Returns:
        Paths of the SAE folders (each holds ``cfg.json`` and
        ``sae_weights.safetensors``).
    """
    saes_dir = assets_dir / "saes"
    manifest_path = assets_dir / "manifest.json"
    # (An --lm-only run's partial manifest names no SAEs yet.)
    recorded = json.loads(manifest_path.read_text()).get("sae_hook_names") if manifest_path.exists() else None
    if recorded:
        return [saes_dir / name for name in recorded]
    return sorted((p for p in saes_dir.iterdir() if p.is_dir()), key=_site_key)


def _site_key(path: Path) -> tuple[int, int]:
    """Sort key ``(layer, 0 for resid_pre / 1 for resid_post)`` for a hook-named folder."""
    _, layer, hook = path.name.split(".", 2)
    return int(layer), 0 if hook == "hook_resid_pre" else 1


def attn_sae_dirs(assets_dir: Path = ASSETS_DIR) -> list[Path]:
    """The attention-output SAE folders under ``assets_dir / "attn_saes"`` in block order (none: [])."""
    root = assets_dir / "attn_saes"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: int(p.name.split(".")[1]))
