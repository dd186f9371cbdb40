"""Train one SAE per residual site with sae_lens' own training runner."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from datasets import Dataset
from sae_lens import (
    HookedSAETransformer,
    LanguageModelSAERunnerConfig,
    LanguageModelSAETrainingRunner,
    LoggingConfig,
    StandardTrainingSAEConfig,
)

from demo.config import TrainConfig

__all__ = ["DATASET_DESCRIPTION", "train_sae"]

logger = logging.getLogger(__name__)

#: Recorded as ``dataset_path`` in the SAE metadata (the data is passed in memory).
DATASET_DESCRIPTION = "featuregraph-demo-synthetic-corpus (in-memory, pre-tokenized)"


def train_sae(
    cfg: TrainConfig,
    model: HookedSAETransformer,
    hook: str,
    dataset: Dataset,
    out_dir: Path,
    seed: int,
) -> None:
    """Train a standard ReLU SAE on ``hook`` and save it (sae_lens format) to ``out_dir``.

    Args:
        cfg: Run configuration (``sae_*`` fields).
        model: The *processed* hooked model (fold_ln, centred writing weights
            and unembed) whose activations the SAE learns; it is the model
            users load.
        hook: Hook name, e.g. ``"blocks.2.hook_resid_pre"``.
        dataset: Pre-tokenized rows (column ``tokens``) of ``cfg.n_ctx`` tokens,
            each starting with BOS.
        out_dir: Destination folder (``cfg.json``, ``sae_weights.safetensors``,
            plus the runner's ``runner_cfg.json`` and ``sparsity.safetensors``).
        seed: Seed for the SAE initialisation and the activation shuffling.

    Activations are scaled to mean norm ``sqrt(d_model)`` during training
    (``expected_average_only_in``) so one L1 coefficient suits every layer;
    the trainer folds the scale into the weights before saving, so the saved
    SAE takes raw activations. All positions, BOS included, are used, so the
    SAE can be spliced in everywhere.
    """
    n_steps = cfg.sae_training_tokens // cfg.sae_batch_tokens
    sae_cfg = StandardTrainingSAEConfig(
        d_in=model.cfg.d_model,
        d_sae=cfg.sae_width,
        l1_coefficient=cfg.sae_l1_coefficient,
        l1_warm_up_steps=int(cfg.sae_l1_warm_up_fraction * n_steps),
        normalize_activations="expected_average_only_in",
        dtype="float32",
        device="cpu",
    )
    runner_cfg = LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        model_name=model.cfg.model_name,
        hook_name=hook,
        dataset_path=DATASET_DESCRIPTION,
        is_dataset_tokenized=True,
        streaming=False,
        context_size=cfg.n_ctx,
        prepend_bos=True,
        training_tokens=cfg.sae_training_tokens,
        train_batch_size_tokens=cfg.sae_batch_tokens,
        store_batch_size_prompts=16,
        # The mixing buffer holds n_batches_in_buffer * context_size activations.
        n_batches_in_buffer=max(2, 8 * cfg.sae_batch_tokens // cfg.n_ctx),
        n_batches_for_norm_estimate=20,
        lr=cfg.sae_lr,
        lr_warm_up_steps=cfg.sae_warm_up_steps,
        lr_scheduler_name="cosineannealing",
        lr_decay_steps=n_steps - cfg.sae_warm_up_steps,
        lr_end=cfg.sae_lr / 20,
        dead_feature_window=max(50, n_steps // 4),
        feature_sampling_window=max(100, n_steps // 2),
        device="cpu",
        seed=seed,
        dtype="float32",
        exclude_special_tokens=False,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        n_checkpoints=0,
        output_path=str(out_dir),
        verbose=False,
        # Empty = transformer_lens' default processing (fold_ln, center_writing_weights,
        # center_unembed all True), which is exactly how demo.loading builds the model.
        # (A non-empty dict also makes sae_lens warn on every SAE load.)
        model_from_pretrained_kwargs={},
    )
    torch.manual_seed(seed)
    LanguageModelSAETrainingRunner(runner_cfg, override_dataset=dataset, override_model=model).run()
