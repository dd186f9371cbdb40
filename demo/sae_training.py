"""Train one SAE per residual site with sae_lens' own trainer.

The default is a BatchTopK-trained SAE that sae_lens saves as a JumpReLU SAE (see
:func:`make_sae` and ``TrainConfig.sae_architecture``); standard ReLU + L1 and JumpReLU with
an L0 penalty can be chosen for comparison.

The activations of every site are read once, from the same forward passes, into
memory (the demo model is small: 128 floats per token and site), and each SAE is
then trained by sae_lens' ``SAETrainer`` on shuffled batches of them. The SAE,
its loss (MSE + L1 of decoder-norm-weighted activations), the optimiser, the
learning-rate and L1 warm-up schedules, the activation normalisation and its
folding into the saved weights, and the saved format are all sae_lens'. Only the
data path is ours: sae_lens' activation store refills a mixing buffer of
``n_batches_in_buffer * store_batch_size_prompts * context_size`` tokens per
site, which on two CPU cores cost more than the training itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from sae_lens import (
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    HookedSAETransformer,
    JumpReLUTrainingSAE,
    JumpReLUTrainingSAEConfig,
    LoggingConfig,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TrainingSAE,
)
from sae_lens.config import SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from featuregraph.demo.config import TrainConfig
from featuregraph.demo.corpus import CorpusGenerator
from featuregraph.demo.tokenization import document_rows, encode_texts

__all__ = ["SAE_ARCHITECTURES", "DATASET_DESCRIPTION", "collect_activations", "make_sae", "sae_rows", "train_one", "train_saes"]

logger = logging.getLogger(__name__)

#: The manifest's description of each SAE architecture the script trains.
SAE_ARCHITECTURES = {
    "standard": (
        "standard (ReLU) SAE with an L1 penalty on decoder-norm-weighted activations (sae_lens 'standard', "
        "the architecture of the method's gpt2-small-res-jb); activations scaled to mean norm sqrt(d_model) "
        "in training (folded into the saved weights)"
    ),
    "jumprelu": (
        "JumpReLU SAE (sae_lens 'jumprelu'): a feature is off below its learned threshold and equal to its "
        "pre-activation above it, so effects on active features are graded as in a ReLU SAE; trained with "
        "Gemma Scope 2's quadratic L0 penalty around a target L0 of {target:g}, which lands each site's L0 "
        "where the sweep cost needs it without the L1 penalty's shrinkage (on this 128-wide stream, standard "
        "ReLU + L1 SAEs reached L0 30-90 at explained variance 0.37-0.87 within the CPU budget); activations "
        "scaled to mean norm sqrt(d_model) in training (folded into the saved weights)"
    ),
    "batchtopk": (
        "JumpReLU SAE (sae_lens 'jumprelu' inference format) trained as a BatchTopK SAE (sae_lens "
        "'batchtopk': the {target:g} x batch-size largest decoder-norm-scaled activations of a batch are kept, "
        "so L0 is {target:g} per token on average), saved with the learned global threshold: at inference a "
        "feature is off below the threshold and equal to its pre-activation above it, independently of the "
        "other features, so effects on active features are graded as in the method's ReLU SAEs, without "
        "TopK's competition for k slots. Chosen over standard ReLU + L1 SAEs, which within the CPU budget "
        "missed L0 5-40 with explained variance >= 0.8 on this 128-wide stream (README, 'The demo'); "
        "activations scaled to mean norm sqrt(d_model) in training (folded into the saved weights)"
    ),
}

#: Recorded as ``dataset_path`` in the SAE metadata (the data is passed in memory).
DATASET_DESCRIPTION = "featuregraph-demo-synthetic-corpus (in-memory, pre-tokenized)"


def make_sae(cfg: TrainConfig, d_in: int, coefficient: float) -> TrainingSAE:
    """A fresh training SAE of ``cfg.sae_architecture``: ``"standard"`` (ReLU, L1 penalty of
    weight ``coefficient``), ``"jumprelu"`` (JumpReLU, quadratic L0 penalty of weight
    ``coefficient`` around ``cfg.sae_target_l0``, Gemma Scope 2's) or ``"batchtopk"`` (BatchTopK
    training with ``cfg.sae_target_l0`` features per token on average over a batch; saved as a
    JumpReLU SAE with the learned global threshold, ``coefficient`` unused)."""
    common = {"d_in": d_in, "d_sae": cfg.sae_width, "normalize_activations": "expected_average_only_in",
              "dtype": "float32", "device": "cpu"}  # fmt: skip
    if cfg.sae_architecture == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(
            **common, l0_coefficient=coefficient, l0_warm_up_steps=cfg.sae_l1_warm_up_steps,
            jumprelu_sparsity_loss_mode="quadratic", target_l0=cfg.sae_target_l0,
            jumprelu_init_threshold=cfg.sae_jumprelu_init_threshold,
        ))  # fmt: skip
    if cfg.sae_architecture == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(**common, k=int(cfg.sae_target_l0)))
    if cfg.sae_architecture != "standard":
        raise ValueError(f"sae_architecture must be 'standard', 'jumprelu' or 'batchtopk', got {cfg.sae_architecture!r}")
    return StandardTrainingSAE(StandardTrainingSAEConfig(
        **common, l1_coefficient=coefficient, l1_warm_up_steps=cfg.sae_l1_warm_up_steps,
    ))  # fmt: skip


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


@torch.no_grad()
def collect_activations(
    model: HookedSAETransformer, hooks: list[str], rows: torch.Tensor, batch_rows: int = 256
) -> dict[str, torch.Tensor]:
    """``{hook: FloatTensor[n, d_in]}``: the activations at every non-BOS position of
    ``rows`` (BOS starts and BOS padding are left out: the sweep never ablates BOS, and
    padding would fill the SAEs with activations no prompt produces)."""
    bos = model.tokenizer.bos_token_id
    parts: dict[str, list[torch.Tensor]] = {hook: [] for hook in hooks}
    last = max(int(h.split(".")[1]) for h in hooks)
    for start in range(0, len(rows), batch_rows):
        tokens = rows[start : start + batch_rows]
        keep = tokens != bos
        _, cache = model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=last + 1)
        for hook in hooks:
            # hook_z is [.., n_heads, d_head]: flattened head-major, as sae_lens' hook_z SAEs read it.
            parts[hook].append(cache[hook][keep].flatten(1))
    return {hook: torch.cat(p) for hook, p in parts.items()}


def _batches(acts: torch.Tensor, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled batches of ``acts`` (a new permutation per epoch, seeded)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(acts), generator=gen)
        for start in range(0, len(order) - batch + 1, batch):
            yield acts[order[start : start + batch]]


def train_one(
    cfg: TrainConfig, acts: torch.Tensor, coefficient: float, seed: int, n_steps: int | None = None
) -> tuple[TrainingSAE, torch.Tensor]:
    """Train one SAE on ``acts`` with sae_lens' ``SAETrainer``.

    Returns the trained SAE (activation normalisation folded into its weights, so it
    takes raw activations) and its per-feature log10 firing frequency over the last
    sparsity window (sae_lens' ``sparsity.safetensors``).
    """
    steps = n_steps if n_steps is not None else cfg.sae_training_tokens // cfg.sae_batch_tokens
    torch.manual_seed(seed)
    sae = make_sae(cfg, acts.shape[1], coefficient)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * cfg.sae_batch_tokens,
        train_batch_size_samples=cfg.sae_batch_tokens,
        lr=cfg.sae_lr,
        lr_end=cfg.sae_lr * cfg.sae_final_lr_fraction,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=cfg.sae_warm_up_steps,
        lr_decay_steps=steps - cfg.sae_warm_up_steps,
        device="cpu",
        dead_feature_window=max(50, steps // 4),
        feature_sampling_window=max(100, steps // 2),
        n_batches_for_norm_estimate=20,
        logger=LoggingConfig(log_to_wandb=False),
    )
    trainer = SAETrainer(trainer_cfg, sae, data_provider=_batches(acts, cfg.sae_batch_tokens, seed))
    trained = trainer.fit()
    return trained, trainer.log_feature_sparsity


def train_saes(
    cfg: TrainConfig,
    model: HookedSAETransformer,
    hooks: list[str],
    rows: torch.Tensor,
    out_dir: Path,
    seed: int,
) -> dict[str, int]:
    """Train one SAE per hook (:func:`make_sae`) and save each (sae_lens format) to ``out_dir / hook``.

    Args:
        cfg: Run configuration (``sae_*`` fields; the sparsity coefficient of a site is
            ``cfg.sae_l1_coefficients(hooks)[hook]``, unused by BatchTopK).
        model: The *processed* hooked model (fold_ln, centred writing weights
            and unembed) whose activations the SAEs learn; it is the model
            users load.
        hooks: Hook names, e.g. ``["blocks.0.hook_resid_pre", ...]``.
        rows: ``LongTensor[n, cfg.sae_context_size]`` from :func:`sae_rows`.
        out_dir: Parent folder; each SAE folder holds ``cfg.json``,
            ``sae_weights.safetensors`` and ``sparsity.safetensors``.
        seed: Seed of the SAE initialisations and the batch order (site ``i`` uses
            ``seed + i``).

    Returns:
        ``{hook: number of distinct activation vectors trained on}``.

    Activations are scaled to mean norm ``sqrt(d_model)`` during training
    (``expected_average_only_in``) so one learning rate and one coefficient scale
    suit every layer; the trainer folds the scale into the saved weights.
    """
    acts = collect_activations(model, hooks, rows)
    coefficients = cfg.sae_l1_coefficients(hooks)
    for i, hook in enumerate(hooks):
        logger.info("SAE %s (%s): %d activations", hook, cfg.sae_architecture, len(acts[hook]))
        sae, log_sparsity = train_one(cfg, acts[hook], coefficients[hook], seed + i)
        meta = sae.cfg.metadata
        meta.dataset_path = DATASET_DESCRIPTION
        meta.hook_name = hook
        meta.model_name = model.cfg.model_name
        meta.model_class_name = "HookedTransformer"
        meta.context_size = cfg.sae_context_size
        meta.prepend_bos = True
        meta.exclude_special_tokens = True
        meta.model_from_pretrained_kwargs = {}
        if hook.endswith(".hook_z"):
            # Trained on flattened heads; saved so that sae_lens flattens [.., heads, d_head] itself.
            sae.cfg.reshape_activations = "hook_z"
        folder = out_dir / hook
        sae.save_inference_model(str(folder))
        save_file({"sparsity": log_sparsity}, folder / "sparsity.safetensors")
        del acts[hook]
    return {hook: int(rows.ne(model.tokenizer.bos_token_id).sum()) for hook in hooks}
