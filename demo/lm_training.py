"""Training of the toy GPT-2-style language model (CPU, seeded).

Two stages:

1. **Copy warm-up** -- random token sequences shown twice, with the loss on
   the second copy only. On the corpus alone a model this small sits on a long
   plateau before it discovers copying earlier tokens (most name positions are
   unpredictable, and their gradient noise drowns the copying signal); IOI is
   built on copying, so we give the model that skill first.
2. **Language modelling** on the synthetic corpus, one document per row
   (see :func:`document_batch` for why not packed rows). Every token
   is a next-token target; the answer tokens of task documents get a larger
   loss weight (``answer_loss_weight``) so that the behaviours we study are
   learned within a few minutes of CPU time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from featuregraph.demo.config import TrainConfig
from featuregraph.demo.corpus import CorpusGenerator, Example
from featuregraph.demo.metrics import ScoredPrompt
from featuregraph.demo.tokenization import encode_texts, pad_batch

__all__ = [
    "make_model",
    "copy_warmup",
    "document_batch",
    "train_lm",
    "hf_first_token_accuracy",
]

logger = logging.getLogger(__name__)


def make_model(cfg: TrainConfig, vocab_size: int, bos_id: int) -> GPT2LMHeadModel:
    """Fresh GPT-2-style model with tied embeddings; dropout off (the data is plentiful)."""
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


def answer_weights(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], answer_weight: float
) -> tuple[list[list[int]], list[list[float]]]:
    """Token ids of each document and the loss weight of each of its tokens.

    Answer tokens (those of ``prompt + answer`` after the prompt's tokens) get
    ``answer_weight``; all other tokens 1.
    """
    texts = encode_texts(tokenizer, [e.text for e in examples])
    weights = [[1.0] * len(t) for t in texts]
    task_idx = [i for i, e in enumerate(examples) if e.answer]
    prompts = encode_texts(tokenizer, [examples[i].prompt for i in task_idx])
    answered = encode_texts(tokenizer, [examples[i].prompt + examples[i].answer for i in task_idx])
    for i, p, pa in zip(task_idx, prompts, answered, strict=True):
        for j in range(len(p), min(len(pa), len(weights[i]))):
            weights[i][j] = answer_weight
    return texts, weights


def _optimizer(cfg: TrainConfig, model: GPT2LMHeadModel) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and layer-norm gains."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.lm_weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lm_lr,
        betas=(0.9, 0.95),
    )


def _schedule(warmup: int, total: int, final_fraction: float) -> Callable[[int], float]:
    """Linear warm-up then cosine decay to ``final_fraction`` of the peak learning rate."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def copy_warmup(cfg: TrainConfig, model: GPT2LMHeadModel, seed: int) -> dict[str, float]:
    """Stage 1: learn to copy (see module docstring).

    Each sequence is ``BOS x x`` with ``x`` a run of ``copy_warmup_length``
    random non-special token ids; only tokens 2.. of the second ``x`` are targets.

    Returns:
        Final loss (nats) and copy accuracy over the last batch.
    """
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    bos = model.config.bos_token_id
    n, length = cfg.copy_warmup_batch, cfg.copy_warmup_length
    opt = _optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg.lm_warmup_steps, cfg.copy_warmup_steps, 1.0))
    model.train()
    loss, acc = torch.tensor(float("nan")), 0.0
    for step in range(cfg.copy_warmup_steps):
        x = torch.randint(0, vocab, (n, length), generator=gen)
        x = torch.where(x == bos, (x + 1) % vocab, x)
        tokens = torch.cat([torch.full((n, 1), bos), x, x], dim=1)
        labels = tokens.clone()
        labels[:, : length + 2] = -100  # first half and the (unpredictable) restart
        out = model(input_ids=tokens, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.lm_grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.detach()
        if (step + 1) % 50 == 0 or step + 1 == cfg.copy_warmup_steps:
            pred = out.logits[:, length + 1 : -1].argmax(-1)
            acc = float((pred == tokens[:, length + 2 :]).float().mean())
            logger.info("copy warm-up step %d/%d loss %.3f copy acc %.3f", step + 1, cfg.copy_warmup_steps, loss, acc)
    model.eval()
    return {"loss": round(float(loss), 4), "copy_accuracy": round(acc, 4)}


def weighted_lm_loss(
    model: GPT2LMHeadModel, tokens: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, float, int]:
    """Sums of the weighted and plain next-token cross-entropy (nats) of a batch of rows.

    Targets with weight 0 (padding, BOS) are left out of both.

    Returns:
        ``(weighted_sum, plain_sum, n_targets)``; only the first carries gradients.
    """
    logits = model(input_ids=tokens).logits[:, :-1]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none")
    w = weights[:, 1:].reshape(-1)
    real = w > 0
    return (ce * w).sum(), float(ce.detach()[real].sum()), int(real.sum())


@torch.no_grad()
def hf_first_token_accuracy(model: GPT2LMHeadModel, prompts: Sequence[ScoredPrompt], pad_id: int) -> dict[str, float]:
    """Greedy first-answer-token accuracy per tag, straight from the HF model (progress probe)."""
    was_training = model.training
    model.eval()
    tokens, _ = pad_batch([p.prompt_ids for p in prompts], pad_id)
    last = torch.tensor([len(p.prompt_ids) - 1 for p in prompts])
    preds = model(tokens).logits[torch.arange(len(prompts)), last].argmax(-1).tolist()
    hits: dict[str, list[bool]] = {}
    for p, pred in zip(prompts, preds, strict=True):
        hits.setdefault(p.tag, []).append(pred == p.answer_ids[0])
    model.train(was_training)
    return {tag: round(sum(h) / len(h), 3) for tag, h in hits.items()}


def document_batch(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], answer_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training batch: each document in its own ``BOS doc BOS`` row, right-padded.

    Documents are not packed: a row holding several IOI stories offers the
    model names from earlier stories to copy, which keeps it on the "copy the
    most recent name" plateau far longer than isolated stories do.

    Returns:
        ``(tokens, weights)`` of shape ``[len(examples), longest + 2]``;
        ``weights[i, j]`` is the loss weight of predicting ``tokens[i, j]``
        (0 on BOS and padding, ``answer_weight`` on answer tokens, else 1).
    """
    bos = tokenizer.bos_token_id
    docs, doc_weights = answer_weights(tokenizer, examples, answer_weight)
    tokens, _ = pad_batch([[bos] + d + [bos] for d in docs], bos)
    weights = torch.zeros(tokens.shape, dtype=torch.float32)
    for i, w in enumerate(doc_weights):
        weights[i, 1 : len(w) + 2] = torch.tensor(w + [1.0])
    return tokens, weights


def train_lm(
    cfg: TrainConfig,
    model: GPT2LMHeadModel,
    gen: CorpusGenerator,
    tokenizer: PreTrainedTokenizerBase,
    probe: Sequence[ScoredPrompt] = (),
) -> tuple[list[dict[str, Any]], int]:
    """Stage 2: ``lm_steps`` steps of ``lm_docs_per_step`` fresh documents from ``gen``.

    Args:
        gen: Training-split corpus stream (drawn with ``cfg.train_mix()``).
        probe: Held-out prompts whose accuracy is logged every ``lm_probe_every`` steps.

    Returns:
        ``(curve, n_tokens)``: the training curve ``[{"step", "loss",
        "probe_accuracy"?}]`` (``loss`` is the plain next-token loss in nats
        over real tokens, averaged over 25 steps) and the number of real
        (non-padding) target tokens seen.
    """
    opt = _optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _schedule(cfg.lm_warmup_steps, cfg.lm_steps, cfg.lm_final_lr_fraction)
    )
    model.train()
    pad_id = model.config.bos_token_id
    mix = cfg.train_mix()
    curve: list[dict[str, Any]] = []
    recent: list[float] = []
    n_tokens = 0
    start = time.perf_counter()
    for step in range(cfg.lm_steps):
        docs = sorted(gen.take(cfg.lm_docs_per_step, mix), key=lambda e: len(e.text))
        # Length-sorted micro-batches waste far less compute on padding; the
        # step's loss is still the weighted mean over all of its documents.
        parts = [document_batch(tokenizer, docs[i : i + cfg.lm_micro_batch], cfg.answer_loss_weight)
                 for i in range(0, len(docs), cfg.lm_micro_batch)]
        total_weight = sum(float(w[:, 1:].sum()) for _, w in parts)
        plain_sum, real = 0.0, 0
        for tokens, weights in parts:
            weighted_sum, plain_part, n_real = weighted_lm_loss(model, tokens, weights)
            (weighted_sum / total_weight).backward()
            plain_sum, real = plain_sum + plain_part, real + n_real
        n_tokens += real
        plain = plain_sum / real
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.lm_grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        recent = (recent + [float(plain)])[-25:]
        if (step + 1) % 25 == 0 or step + 1 == cfg.lm_steps:
            point: dict[str, Any] = {"step": step + 1, "loss": round(sum(recent) / len(recent), 4)}
            if probe and ((step + 1) % cfg.lm_probe_every == 0 or step + 1 == cfg.lm_steps):
                point["probe_accuracy"] = hf_first_token_accuracy(model, probe, pad_id)
            curve.append(point)
            logger.info(
                "lm step %d/%d loss %.3f lr %.2e (%.0f tok/s) %s",
                step + 1, cfg.lm_steps, point["loss"], sched.get_last_lr()[0],
                n_tokens / (time.perf_counter() - start),
                point.get("probe_accuracy", ""),
            )
    model.eval()
    return curve, n_tokens
