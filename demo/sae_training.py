"""Train one SAE per residual site with sae_lens' own (multi-SAE) training runner."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from datasets import Dataset
from sae_lens import (
    HookedSAETransformer,
    LoggingConfig,
    MultiSAETrainingRunner,
    MultiSAETrainingRunnerConfig,
    StandardTrainingSAEConfig,
)
from transformers import PreTrainedTokenizerBase

from featuregraph.demo.config import TrainConfig
from featuregraph.demo.corpus import CorpusGenerator
from featuregraph.demo.tokenization import document_rows, encode_texts

__all__ = ["DATASET_DESCRIPTION", "run_multi", "sae_config", "sae_rows", "train_saes"]

logger = logging.getLogger(__name__)

#: Recorded as ``dataset_path`` in the SAE metadata (the data is passed in memory).
DATASET_DESCRIPTION = "featuregraph-demo-synthetic-corpus (in-memory, pre-tokenized)"


def sae_config(cfg: TrainConfig, d_in: int, l1_coefficient: float | None = None) -> StandardTrainingSAEConfig:
    """Training config of one demo SAE: a standard ReLU SAE with an L1 sparsity penalty
    (``cfg.sae_l1_coefficient`` unless ``l1_coefficient`` is given)."""
    return StandardTrainingSAEConfig(
        d_in=d_in,
        d_sae=cfg.sae_width,
        l1_coefficient=cfg.sae_l1_coefficient if l1_coefficient is None else l1_coefficient,
        l1_warm_up_steps=cfg.sae_l1_warm_up_steps,
        normalize_activations="expected_average_only_in",
        dtype="float32",
        device="cpu",
    )


def sae_rows(
    gen: CorpusGenerator, tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, n_tokens: int
) -> torch.Tensor:
    """Single-document rows (:func:`demo.tokenization.document_rows`) holding at least
    ``n_tokens`` non-BOS positions, drawn from ``gen`` with the training mix."""
    chunks: list[torch.Tensor] = []
    have = 0
    while have < n_tokens:
        docs = encode_texts(tokenizer, [e.text for e in gen.take(2_000, cfg.train_mix())])
        rows, n_real = document_rows(docs, cfg.sae_context_size, tokenizer.bos_token_id)
        chunks.append(rows)
        have += n_real
    return torch.cat(chunks)


def train_saes(
    cfg: TrainConfig,
    model: HookedSAETransformer,
    hooks: list[str],
    rows: torch.Tensor,
    out_dir: Path,
    seed: int,
) -> None:
    """Train one ReLU SAE per hook, all from the same forward passes, and save each (sae_lens
    format) to ``out_dir / hook``.

    Args:
        cfg: Run configuration (``sae_*`` fields).
        model: The *processed* hooked model (fold_ln, centred writing weights
            and unembed) whose activations the SAEs learn; it is the model
            users load.
        hooks: Hook names, e.g. ``["blocks.0.hook_resid_pre", ...]``.
        rows: ``LongTensor[n, cfg.sae_context_size]`` from :func:`sae_rows`.
        out_dir: Parent folder; each SAE folder holds ``cfg.json``,
            ``sae_weights.safetensors`` and ``sparsity.safetensors``.
        seed: Seed for the SAE initialisations and the activation shuffling.

    BOS positions (row starts and padding) are left out of training
    (``exclude_special_tokens``): the sweep never ablates BOS, and rows padded
    with BOS would otherwise fill the SAEs with activations no prompt produces.
    Activations are scaled to mean norm ``sqrt(d_model)`` during training
    (``expected_average_only_in``) so one learning rate suits every layer;
    the trainer folds the scale into the weights before saving, so the saved
    SAEs take raw activations.
    """
    saes = {hook: sae_config(cfg, model.cfg.d_model) for hook in hooks}
    run_multi(cfg, model, saes, {hook: hook for hook in hooks}, rows, out_dir, seed)


def run_multi(
    cfg: TrainConfig,
    model: HookedSAETransformer,
    saes: dict[str, StandardTrainingSAEConfig],
    hook_of: dict[str, str],
    rows: torch.Tensor,
    out_dir: Path,
    seed: int,
) -> None:
    """sae_lens' multi-SAE runner on ``rows``: SAE ``name`` (saved to ``out_dir / name``) with
    config ``saes[name]`` learns the activations at hook ``hook_of[name]``. Several SAEs may share
    a hook (e.g. to compare L1 coefficients from the same forward passes)."""
    n_steps = cfg.sae_training_tokens // cfg.sae_batch_tokens
    runner_cfg = MultiSAETrainingRunnerConfig(
        saes=saes,
        hook_names=hook_of,
        model_name=model.cfg.model_name,
        dataset_path=DATASET_DESCRIPTION,
        streaming=False,
        context_size=cfg.sae_context_size,
        prepend_bos=True,
        exclude_special_tokens=True,
        training_tokens=cfg.sae_training_tokens,
        train_batch_size_tokens=cfg.sae_batch_tokens,
        store_batch_size_prompts=64,
        # sae_lens sizes the mixing buffer as n_batches_in_buffer * context_size tokens.
        n_batches_in_buffer=max(2, 8 * cfg.sae_batch_tokens // cfg.sae_context_size),
        n_batches_for_norm_estimate=20,
        lr=cfg.sae_lr,
        lr_warm_up_steps=cfg.sae_warm_up_steps,
        lr_scheduler_name="cosineannealing",
        lr_decay_steps=n_steps - cfg.sae_warm_up_steps,
        lr_end=cfg.sae_lr / 20,
        dead_feature_window=max(50, n_steps // 4),
        feature_sampling_window=max(100, n_steps // 2),
        n_eval_batches=0,
        device="cpu",
        seed=seed,
        dtype="float32",
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        n_checkpoints=0,
        output_path=str(out_dir),
        # Empty = transformer_lens' default processing (fold_ln, center_writing_weights,
        # center_unembed all True), which is exactly how featuregraph loads the model.
        # (A non-empty dict also makes sae_lens warn on every SAE load.)
        model_from_pretrained_kwargs={},
    )
    dataset = Dataset.from_dict({"tokens": rows.tolist()})
    torch.manual_seed(seed)
    MultiSAETrainingRunner(runner_cfg, override_dataset=dataset, override_model=model).run()
    # The runner's own config (one file for all SAEs) is not part of an SAE folder.
    (out_dir / "runner_cfg.json").unlink(missing_ok=True)
