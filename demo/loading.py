"""Load the bundled toy model and SAEs the way featuregraph users do.

The model is stored as a plain HF ``GPT2LMHeadModel`` folder; it is turned
into a ``sae_lens.HookedSAETransformer`` with transformer_lens' weight
processing (``fold_ln``, ``center_writing_weights``, ``center_unembed``). The
SAEs were trained on the activations of this *processed* model, so always
load the model through :func:`load_hooked_model` before using them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from sae_lens import SAE, HookedSAETransformer
from transformers import GPT2LMHeadModel

from featuregraph.demo import ASSETS_DIR, MODEL_DIR, attn_sae_dirs, sae_dirs

__all__ = ["load_hf_model", "load_hooked_model", "load_saes"]

logger = logging.getLogger(__name__)


def load_hf_model(model_dir: Path = MODEL_DIR) -> GPT2LMHeadModel:
    """The raw HF model, in eval mode, float32 on CPU."""
    model = GPT2LMHeadModel.from_pretrained(str(model_dir), dtype=torch.float32)
    return model.eval()


def load_hooked_model(model_dir: Path = MODEL_DIR, device: str = "cpu") -> HookedSAETransformer:
    """The processed ``HookedSAETransformer``, loaded by featuregraph's own loader exactly as
    ``featuregraph ingest --model DIR`` loads it (``fold_ln``, ``center_writing_weights``,
    ``center_unembed``); logits differ from the HF model only by a per-position constant."""
    from featuregraph.ingest.config import ModelSpec
    from featuregraph.ingest.loading import MODEL_PROCESSING_KEYS, load_model

    model, _ = load_model(ModelSpec(str(model_dir)), dict.fromkeys(MODEL_PROCESSING_KEYS, True), device, "float32")
    return model


def load_saes(assets_dir: Path = ASSETS_DIR, device: str = "cpu") -> dict[str, SAE]:
    """All bundled residual SAEs keyed by hook name, in site order (see :func:`demo.sae_dirs`)."""
    return load_sae_folders(sae_dirs(assets_dir), device)


def load_attn_saes(assets_dir: Path = ASSETS_DIR, device: str = "cpu") -> dict[str, SAE]:
    """The bundled attention-output SAEs keyed by hook name, in block order (see :func:`demo.attn_sae_dirs`)."""
    return load_sae_folders(attn_sae_dirs(assets_dir), device)


def load_sae_folders(folders: list[Path], device: str = "cpu") -> dict[str, SAE]:
    """sae_lens SAE folders, in eval mode, keyed by the hook each reads."""
    saes: dict[str, SAE] = {}
    for path in folders:
        sae = SAE.load_from_disk(str(path), device=device)
        saes[sae.cfg.metadata.hook_name] = sae.eval()
    return saes
