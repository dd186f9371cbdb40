"""Train the bundled toy model and its residual-stream SAEs (CPU only, seeded).

Usage::

    python -m demo.train                 # rebuild the committed assets in demo/assets
    python -m demo.train --out DIR       # write everything under DIR instead
    python -m demo.train --quick         # smoke test: tiny run into a temporary folder

Pipeline (all randomness derives from ``--seed``):

1. draw documents from :mod:`demo.corpus` (training split) and train a
   byte-level BPE tokenizer on them;
2. train a 4-layer GPT-2-style ``GPT2LMHeadModel`` on packed 128-token rows;
3. save it with the tokenizer, reload it as a processed
   ``HookedSAETransformer`` (fold_ln, centred writing weights and unembed) and
   check that it predicts the same tokens as the HF model;
4. train one standard ReLU SAE per residual site with sae_lens' own
   ``LanguageModelSAETrainingRunner`` on the processed model's activations;
5. measure task accuracy, SAE quality and spliced cross-entropy on held-out
   instances and write ``manifest.json``, ``prompts.jsonl`` and
   ``noise_corpus.jsonl``.

Determinism: same seed, same library versions and same number of torch CPU
threads give the same artifacts (floating-point reductions depend on the
thread count).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from sae_lens import (
    HookedSAETransformer,
    LanguageModelSAERunnerConfig,
    LanguageModelSAETrainingRunner,
    LoggingConfig,
    StandardTrainingSAEConfig,
)
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from demo import ASSETS_DIR, DEMO_DIR
from demo.corpus import HELDOUT_PERCENT, TASKS, CorpusGenerator, Example
from demo.loading import load_hf_model, load_hooked_model, load_saes
from demo.metrics import (
    ScoredPrompt,
    cross_entropy,
    encode_contexts,
    prepare_prompts,
    sae_stats,
    task_accuracy,
)
from demo.tokenization import (
    PRETOKENIZE_PATTERN,
    SPECIAL_TOKEN,
    encode_texts,
    pack_documents,
    pad_batch,
    train_tokenizer,
)

logger = logging.getLogger("demo.train")

#: Quality targets written to (and checked in) the manifest.
TARGETS: dict[str, float] = {
    "task_accuracy_min": 0.90,
    "sae_explained_variance_min": 0.80,
    "sae_mean_l0_min": 5.0,
    "sae_mean_l0_max": 40.0,
    "ce_relative_increase_max": 0.10,
}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of the run; recorded verbatim in the manifest."""

    seed: int = 0
    # One thread: deterministic across machines and far faster than two when the
    # CPU is shared (OpenMP threads stall on each other when oversubscribed).
    torch_threads: int = 1
    # document mixture of the training streams (probabilities)
    mix_paren: float = 0.15
    mix_acronym: float = 0.3
    mix_ioi: float = 0.4
    mix_filler: float = 0.15
    # tokenizer
    vocab_size: int = 2048
    tokenizer_docs: int = 30_000
    # model (GPT-2 architecture)
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    n_ctx: int = 128
    # language-model training
    lm_steps: int = 800
    lm_batch_rows: int = 16
    lm_lr: float = 3e-3
    lm_warmup_steps: int = 40
    lm_final_lr_fraction: float = 0.05
    lm_weight_decay: float = 0.05
    lm_grad_clip: float = 1.0
    lm_probe_every: int = 50
    # SAEs (sae_lens standard ReLU architecture)
    sae_width: int = 1024
    sae_l1_coefficient: float = 5.0
    sae_l1_warm_up_fraction: float = 0.2
    sae_lr: float = 2e-3
    sae_training_tokens: int = 1_000_000
    sae_batch_tokens: int = 2048
    sae_warm_up_steps: int = 25
    # evaluation / bundled prompt sets
    eval_prompts_per_task: int = 400
    bundled_prompts_per_task: int = 100
    noise_contexts: int = 200
    eval_rows: int = 256

    def train_mix(self) -> dict[str, float]:
        """Tag -> probability of the training document streams."""
        return {"paren": self.mix_paren, "acronym": self.mix_acronym, "ioi": self.mix_ioi, "filler": self.mix_filler}

    @classmethod
    def quick(cls) -> TrainConfig:
        """Tiny settings that only exercise the code paths (metrics will be poor)."""
        return cls(
            tokenizer_docs=3_000,
            lm_steps=10,
            lm_batch_rows=8,
            lm_warmup_steps=2,
            sae_width=256,
            sae_training_tokens=20_480,
            sae_batch_tokens=1024,
            sae_warm_up_steps=2,
            eval_prompts_per_task=20,
            bundled_prompts_per_task=10,
            noise_contexts=10,
            eval_rows=8,
        )


def hook_names(n_layers: int) -> list[str]:
    """Residual sites in forward order: every ``hook_resid_pre`` plus the final ``hook_resid_post``."""
    return [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"
    ]


# ----------------------------------------------------------------------------- utils


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall-clock seconds of a block in ``timings[name]``."""
    start = time.perf_counter()
    logger.info("== %s", name)
    yield
    timings[name] = round(time.perf_counter() - start, 1)
    logger.info("== %s done in %.1fs", name, timings[name])


def build_rows(
    gen: CorpusGenerator,
    tokenizer: PreTrainedTokenizerBase,
    n_rows: int,
    context_size: int,
    mix: dict[str, float],
) -> torch.Tensor:
    """Pack freshly drawn documents into ``n_rows`` BOS-started rows of ``context_size`` tokens."""
    chunks: list[torch.Tensor] = []
    have = 0
    while have < n_rows:
        docs = [e.text for e in gen.take(4_000, mix)]
        packed = pack_documents(encode_texts(tokenizer, docs), context_size, tokenizer.bos_token_id)
        chunks.append(packed)
        have += packed.shape[0]
    return torch.cat(chunks)[:n_rows]


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    """One JSON object per line, UTF-8, keys in insertion order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the artifacts."""
    libs = ["torch", "transformers", "tokenizers", "sae-lens", "transformer-lens", "datasets"]
    out = {"python": platform.python_version()}
    out.update({lib: version(lib) for lib in libs})
    return out


# ------------------------------------------------------------------------ LM training


def make_model(cfg: TrainConfig, vocab_size: int, bos_id: int) -> GPT2LMHeadModel:
    """Fresh GPT-2-style model; dropout off (the synthetic data is plentiful)."""
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.n_ctx,
        # transformer_lens reads ``n_ctx`` from the HF config, as in the original GPT-2 configs.
        n_ctx=cfg.n_ctx,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=bos_id,
        eos_token_id=bos_id,
        pad_token_id=bos_id,
        tie_word_embeddings=True,
    )
    return GPT2LMHeadModel(config)


def lr_lambda(cfg: TrainConfig) -> Any:
    """Linear warm-up then cosine decay to ``lm_final_lr_fraction`` of the peak."""

    def f(step: int) -> float:
        if step < cfg.lm_warmup_steps:
            return (step + 1) / cfg.lm_warmup_steps
        progress = (step - cfg.lm_warmup_steps) / max(1, cfg.lm_steps - cfg.lm_warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return cfg.lm_final_lr_fraction + (1 - cfg.lm_final_lr_fraction) * cosine

    return f


@torch.no_grad()
def hf_first_token_accuracy(model: GPT2LMHeadModel, prompts: list[ScoredPrompt], pad_id: int) -> dict[str, float]:
    """Greedy first-answer-token accuracy per tag, straight from the HF model (progress probe)."""
    was_training = model.training
    model.eval()
    tokens, _ = pad_batch([p.prompt_ids for p in prompts], pad_id)
    last = torch.tensor([len(p.prompt_ids) - 1 for p in prompts])
    preds = model(tokens).logits[torch.arange(len(prompts)), last].argmax(-1).tolist()
    hits: dict[str, list[bool]] = {}
    for p, pred in zip(prompts, preds):
        hits.setdefault(p.tag, []).append(pred == p.answer_ids[0])
    model.train(was_training)
    return {tag: round(sum(h) / len(h), 3) for tag, h in hits.items()}


def train_lm(
    cfg: TrainConfig,
    model: GPT2LMHeadModel,
    rows: torch.Tensor,
    probe: list[ScoredPrompt] | None = None,
) -> list[dict[str, Any]]:
    """Next-token training on ``rows`` (one pass, ``lm_batch_rows`` rows per step).

    Args:
        probe: Held-out prompts whose accuracy is logged every ``lm_probe_every`` steps.

    Returns:
        Training curve ``[{"step", "loss", "probe_accuracy"?}]`` (loss in nats,
        mean of the last 25 steps).
    """
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.lm_weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lm_lr,
        betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    model.train()
    curve: list[dict[str, float]] = []
    recent: list[float] = []
    start = time.perf_counter()
    for step in range(cfg.lm_steps):
        batch = rows[step * cfg.lm_batch_rows : (step + 1) * cfg.lm_batch_rows]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.lm_grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recent = (recent + [loss.item()])[-25:]
        if (step + 1) % 25 == 0 or step + 1 == cfg.lm_steps:
            mean_loss = sum(recent) / len(recent)
            point: dict[str, Any] = {"step": step + 1, "loss": round(mean_loss, 4)}
            if probe and ((step + 1) % cfg.lm_probe_every == 0 or step + 1 == cfg.lm_steps):
                point["probe_accuracy"] = hf_first_token_accuracy(model, probe, rows[0, 0].item())
            curve.append(point)
            elapsed = time.perf_counter() - start
            logger.info(
                "lm step %d/%d loss %.3f lr %.2e (%.0f tok/s) %s",
                step + 1, cfg.lm_steps, mean_loss, sched.get_last_lr()[0],
                (step + 1) * batch.numel() / elapsed, point.get("probe_accuracy", ""),
            )
    model.eval()
    return curve


@torch.no_grad()
def hf_vs_hooked(hf_model: GPT2LMHeadModel, hooked: HookedSAETransformer, tokens: torch.Tensor) -> dict[str, float]:
    """Agreement between the HF model and the processed hooked model.

    Logits may differ by a per-position constant (``center_unembed``), so we
    compare log-probabilities and greedy predictions.
    """
    a = torch.log_softmax(hf_model(tokens).logits, -1)
    b = torch.log_softmax(hooked(tokens), -1)
    return {
        "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
        "max_abs_logprob_diff": float((a - b).abs().max()),
        "n_tokens": int(tokens.numel()),
    }


# ----------------------------------------------------------------------- SAE training


def train_sae(
    cfg: TrainConfig,
    model: HookedSAETransformer,
    hook: str,
    dataset: Dataset,
    out_dir: Path,
    seed: int,
) -> None:
    """Train one standard ReLU SAE on ``hook`` with sae_lens' runner; save it to ``out_dir``.

    Activations are scaled to mean norm ``sqrt(d_model)`` during training
    (``expected_average_only_in``) so one L1 coefficient suits every layer;
    the trainer folds the scale back into the weights before saving, so the
    saved SAE takes raw activations.
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
        dataset_path="featuregraph-demo-synthetic-corpus (in-memory, pre-tokenized)",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=cfg.n_ctx,
        prepend_bos=True,
        training_tokens=cfg.sae_training_tokens,
        train_batch_size_tokens=cfg.sae_batch_tokens,
        store_batch_size_prompts=32,
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
    seed_everything(seed)
    LanguageModelSAETrainingRunner(runner_cfg, override_dataset=dataset, override_model=model).run()


# ------------------------------------------------------------------------- evaluation


def evaluate(
    model: HookedSAETransformer,
    hooks: list[str],
    assets_dir: Path,
    eval_prompts: list[dict[str, str]],
    eval_rows: torch.Tensor,
) -> dict[str, Any]:
    """Held-out task accuracy, per-SAE quality and clean vs spliced cross-entropy."""
    saes = load_saes(assets_dir)
    assert list(saes) == hooks, (list(saes), hooks)
    acc = task_accuracy(model, prepare_prompts(model.tokenizer, eval_prompts))
    stats = sae_stats(model, saes, eval_rows)
    clean = cross_entropy(model, eval_rows)
    spliced = cross_entropy(model, eval_rows, list(saes.values()))
    single = {hook: round(cross_entropy(model, eval_rows, [sae]), 4) for hook, sae in saes.items()}
    return {
        "task_accuracy": acc,
        "sae": stats,
        "ce_loss": {
            "clean": clean,
            "all_saes_spliced": spliced,
            "relative_increase": (spliced - clean) / clean,
            "single_sae_spliced": single,
            "n_tokens": int(eval_rows.numel()),
        },
    }


def bundled_check(
    model: HookedSAETransformer,
    assets_dir: Path,
    prompts: list[dict[str, str]],
    noise: list[dict[str, str]],
) -> dict[str, Any]:
    """Metrics on the bundled jsonl files, measured exactly as ``tests/test_demo_assets.py`` does."""
    saes = load_saes(assets_dir)
    acc = task_accuracy(model, prepare_prompts(model.tokenizer, prompts))
    tokens, valid = encode_contexts(model.tokenizer, [r["text"] for r in noise + prompts])
    return {"task_accuracy": acc, "sae": sae_stats(model, saes, tokens, valid)}


def check_targets(metrics: dict[str, Any]) -> dict[str, bool]:
    """Which quality targets (see :data:`TARGETS`) the measured metrics meet."""
    met: dict[str, bool] = {}
    for tag, acc in metrics["task_accuracy"].items():
        met[f"task_accuracy/{tag}"] = acc["first_token"] >= TARGETS["task_accuracy_min"]
    for hook, s in metrics["sae"].items():
        met[f"sae_explained_variance/{hook}"] = s["explained_variance"] >= TARGETS["sae_explained_variance_min"]
        met[f"sae_mean_l0/{hook}"] = TARGETS["sae_mean_l0_min"] <= s["mean_l0"] <= TARGETS["sae_mean_l0_max"]
    met["ce_relative_increase"] = metrics["ce_loss"]["relative_increase"] <= TARGETS["ce_relative_increase_max"]
    return met


def dir_size_bytes(path: Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------- main


def run(cfg: TrainConfig, out: Path, jsonl_dir: Path, quick: bool, lm_only: bool = False) -> dict[str, Any]:
    """Full pipeline; returns the manifest (also written to ``out / "manifest.json"``)."""
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed)
    mix = cfg.train_mix()
    out.mkdir(parents=True, exist_ok=True)
    model_dir, saes_dir = out / "model", out / "saes"
    for stale in (model_dir, saes_dir):
        if stale.exists():
            shutil.rmtree(stale)
    (out / "manifest.json").unlink(missing_ok=True)
    hooks = hook_names(cfg.n_layers)

    # Independent streams: the tokenizer, the LM and the SAEs see different
    # training documents; evaluation only sees held-out keys.
    tok_gen = CorpusGenerator(cfg.seed + 3, "train")
    lm_gen = CorpusGenerator(cfg.seed, "train")
    sae_gen = CorpusGenerator(cfg.seed + 2, "train")
    held = CorpusGenerator(cfg.seed + 1, "heldout")

    with timed(timings, "tokenizer"):
        tokenizer = train_tokenizer((e.text for e in tok_gen.take(cfg.tokenizer_docs, mix)), cfg.vocab_size)
        bos = tokenizer.bos_token_id

    with timed(timings, "held-out sets"):
        eval_examples = held.balanced(cfg.eval_prompts_per_task)
        eval_prompts = [e.to_json() for e in eval_examples]
        # The bundled prompts are the first instances of the evaluation set.
        n_bundled = cfg.bundled_prompts_per_task * len(TASKS)
        bundled_prompts = eval_prompts[:n_bundled]
        noise = [e.to_json() for e in held.balanced(cfg.noise_contexts, tags=("filler",))]
        eval_docs: list[Example] = held.take(cfg.eval_rows * 8, mix)
        eval_rows = pack_documents(encode_texts(tokenizer, [e.text for e in eval_docs]), cfg.n_ctx, bos)
        eval_rows = eval_rows[: cfg.eval_rows]
        # Fails loudly if an answer does not start on a token boundary.
        scored = prepare_prompts(tokenizer, eval_prompts)
        # A small held-out slice to follow task learning during LM training.
        probe = [p for i, p in enumerate(scored) if i < 60 * len(TASKS)]

    with timed(timings, "lm data"):
        lm_rows = build_rows(lm_gen, tokenizer, cfg.lm_steps * cfg.lm_batch_rows, cfg.n_ctx, mix)
    with timed(timings, "lm training"):
        seed_everything(cfg.seed)
        hf_model = make_model(cfg, len(tokenizer), bos)
        curve = train_lm(cfg, hf_model, lm_rows, probe)
        hf_model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)

    if lm_only:
        return {"lm_loss_curve": curve}

    with timed(timings, "hooked model check"):
        hf_model = load_hf_model(model_dir)
        hooked = load_hooked_model(model_dir)
        agreement = hf_vs_hooked(hf_model, hooked, eval_rows[:32])
        logger.info("HF vs hooked: %s", agreement)

    with timed(timings, "sae training"):
        # Enough rows for the training tokens plus the norm estimate and buffer fill.
        n_rows = cfg.sae_training_tokens // cfg.n_ctx + 20 * cfg.sae_batch_tokens // cfg.n_ctx + 64
        sae_data = Dataset.from_dict(
            {"tokens": build_rows(sae_gen, tokenizer, n_rows, cfg.n_ctx, mix).tolist()}
        )
        for i, hook in enumerate(hooks):
            with timed(timings, f"sae {hook}"):
                train_sae(cfg, hooked, hook, sae_data, saes_dir / hook, seed=cfg.seed + 100 + i)

    with timed(timings, "evaluation"):
        metrics = evaluate(hooked, hooks, out, eval_prompts, eval_rows)
        check = bundled_check(hooked, out, bundled_prompts, noise)
        met = check_targets(metrics)
    write_jsonl(jsonl_dir / "prompts.jsonl", bundled_prompts)
    write_jsonl(jsonl_dir / "noise_corpus.jsonl", noise)

    timings["total"] = round(time.perf_counter() - t_start, 1)
    manifest: dict[str, Any] = {
        "description": (
            "Toy GPT-2-style model and residual-stream SAEs bundled with featuregraph; "
            "built by `python -m demo.train`."
        ),
        "quick": quick,
        "config": asdict(cfg),
        "corpus": {
            "generator": "demo.corpus.CorpusGenerator",
            "seeds": {"tokenizer": cfg.seed + 3, "lm": cfg.seed, "sae": cfg.seed + 2, "heldout": cfg.seed + 1},
            "train_mix": mix,
            "heldout_percent_of_keys": HELDOUT_PERCENT,
            "heldout_keys": "ioi: unordered name pair; acronym: word tuple; paren: bracket + content/frame",
            "lm_training_tokens": int(lm_rows.numel()),
            "sae_training_tokens_per_site": cfg.sae_training_tokens,
        },
        "tokenizer": {
            "type": "byte-level BPE (HF tokenizers) wrapped as GPT2TokenizerFast",
            "vocab_size": len(tokenizer),
            "special_token": SPECIAL_TOKEN,
            "special_token_id": bos,
            "pretokenize_pattern": PRETOKENIZE_PATTERN,
        },
        "model": {
            "path": "model",
            "architecture": "GPT2LMHeadModel",
            "n_params": sum(p.numel() for p in hf_model.parameters()),
            "transformer_lens_model_name": hooked.cfg.model_name,
            "loading": (
                "get_pretrained_model_config(path, fold_ln=True) + convert_gpt2_weights + "
                "HookedSAETransformer(cfg, tokenizer).load_and_process_state_dict(sd, fold_ln=True, "
                "center_writing_weights=True, center_unembed=True); see demo.loading"
            ),
            "lm_loss_curve": curve,
            "hf_vs_hooked": agreement,
        },
        "sae_hook_names": hooks,
        "saes": {
            "architecture": "standard (ReLU, L1 penalty), sae_lens LanguageModelSAETrainingRunner",
            "width": cfg.sae_width,
            "trained_on": "processed HookedSAETransformer activations at every position (BOS included)",
        },
        "versions": library_versions(),
        "torch_num_threads": torch.get_num_threads(),
        "timings_s": timings,
        "metrics": {
            "conventions": {
                "task_accuracy": "greedy next token == first answer token, BOS prepended; "
                "full_answer also requires the remaining answer tokens (acronyms)",
                "task_prompts": f"{cfg.eval_prompts_per_task} held-out prompts per task",
                "sae_token_set": f"{cfg.eval_rows} packed held-out rows of {cfg.n_ctx} tokens; "
                "positions holding <|endoftext|> (BOS and document separators) are excluded",
                "explained_variance": "1 - sum ||x - sae(x)||^2 / sum ||x - mean(x)||^2 over the token set",
                "mean_l0": "mean number of active (> 0) features per token",
                "dead_fraction": "fraction of features never active on the token set",
                "ce_loss": "mean next-token cross-entropy (nats) over all positions of the rows; "
                "spliced = all SAEs replace their activations at every position at once, error term off",
            },
            **metrics,
        },
        "bundled_check": {
            "description": "metrics on prompts.jsonl (task accuracy) and noise_corpus.jsonl + prompts.jsonl "
            "texts as independent BOS-prefixed contexts (SAE stats); re-measured by the tests",
            **check,
        },
        "targets": TARGETS,
        "targets_met": met,
        "all_targets_met": all(met.values()),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    manifest["asset_size_bytes"] = dir_size_bytes(out)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log_summary(manifest)
    return manifest


def log_summary(manifest: dict[str, Any]) -> None:
    """Human-readable summary of the manifest metrics."""
    m = manifest["metrics"]
    for tag, acc in m["task_accuracy"].items():
        logger.info("task %-8s first-token acc %.3f  full-answer acc %.3f", tag, acc["first_token"], acc["full_answer"])
    for hook, s in m["sae"].items():
        logger.info(
            "sae %-26s EV %.3f  L0 %.1f  dead %.3f  CE alone %.4f",
            hook, s["explained_variance"], s["mean_l0"], s["dead_fraction"], m["ce_loss"]["single_sae_spliced"][hook],
        )
    ce = m["ce_loss"]
    logger.info("CE clean %.4f  all SAEs %.4f  (+%.1f%%)", ce["clean"], ce["all_saes_spliced"], 100 * ce["relative_increase"])
    logger.info("targets met: %s  total %.0fs  size %.1f MB", manifest["all_targets_met"],
                manifest["timings_s"]["total"], manifest["asset_size_bytes"] / 1e6)
    for name, ok in manifest["targets_met"].items():
        if not ok:
            logger.warning("target not met: %s", name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default {ASSETS_DIR})")
    parser.add_argument("--quick", action="store_true", help="tiny smoke-test run (into a temp folder unless --out)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lm-only", action="store_true", help="stop after training the LM (for tuning)")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="override TrainConfig fields, e.g. --set lm_steps=400 sae_width=512",
    )
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig.quick() if args.quick else TrainConfig()
    overrides: dict[str, Any] = {"seed": args.seed}
    types = {f.name: f.type for f in fields(TrainConfig)}
    for item in args.set:
        key, value = item.split("=", 1)
        if key not in types:
            raise SystemExit(f"unknown config field {key!r}")
        overrides[key] = float(value) if types[key] in ("float", float) else int(value)
    return replace(cfg, **overrides)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    if args.out is not None:
        out = args.out
    elif args.quick:
        # Never clobber the committed assets with a smoke-test run.
        out = Path(tempfile.mkdtemp(prefix="featuregraph-demo-quick-"))
    else:
        out = ASSETS_DIR
    # The committed prompt files live next to the package; other runs keep theirs in `out`.
    jsonl_dir = DEMO_DIR if out.resolve() == ASSETS_DIR.resolve() else out
    logger.info("writing assets to %s (prompt files to %s)", out, jsonl_dir)
    run(cfg, out, jsonl_dir, quick=args.quick, lm_only=args.lm_only)


if __name__ == "__main__":
    main()
