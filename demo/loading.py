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
from transformer_lens.loading_from_pretrained import get_pretrained_model_config
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
from transformers import AutoTokenizer, GPT2LMHeadModel, PreTrainedTokenizerBase

from demo import ASSETS_DIR, MODEL_DIR, sae_dirs

__all__ = ["load_hf_model", "load_tokenizer", "load_hooked_model", "load_saes"]

logger = logging.getLogger(__name__)


def load_tokenizer(model_dir: Path = MODEL_DIR) -> PreTrainedTokenizerBase:
    """The bundled tokenizer (offline, from the model folder)."""
    return AutoTokenizer.from_pretrained(str(model_dir))


def load_hf_model(model_dir: Path = MODEL_DIR) -> GPT2LMHeadModel:
    """The raw HF model, in eval mode, float32 on CPU."""
    model = GPT2LMHeadModel.from_pretrained(str(model_dir), dtype=torch.float32)
    return model.eval()


def load_hooked_model(
    model_dir: Path = MODEL_DIR,
    device: str = "cpu",
    hf_model: GPT2LMHeadModel | None = None,
) -> HookedSAETransformer:
    """Build the processed ``HookedSAETransformer`` from a saved HF model folder.

    Args:
        model_dir: Folder written by ``save_pretrained`` (model + tokenizer).
        device: Torch device for the hooked model.
        hf_model: Already loaded HF model (skips reading the weights again).

    Returns:
        Model with layer norms folded, writing weights centred and the unembed
        centred; logits differ from the HF model only by a per-position constant.
    """
    cfg = get_pretrained_model_config(str(model_dir), fold_ln=True, device=device)
    hf_model = hf_model if hf_model is not None else load_hf_model(model_dir)
    state_dict = convert_gpt2_weights(hf_model, cfg)
    model = HookedSAETransformer(cfg, load_tokenizer(model_dir))
    model.load_and_process_state_dict(
        state_dict, fold_ln=True, center_writing_weights=True, center_unembed=True
    )
    return model.to(device).eval()


def load_saes(assets_dir: Path = ASSETS_DIR, device: str = "cpu") -> dict[str, SAE]:
    """All bundled SAEs keyed by hook name, in site order (see :func:`demo.sae_dirs`)."""
    saes: dict[str, SAE] = {}
    for path in sae_dirs(assets_dir):
        sae = SAE.load_from_disk(str(path), device=device)
        saes[sae.cfg.metadata.hook_name] = sae.eval()
    return saes
