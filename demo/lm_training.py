"""Training of the toy GPT-2-style language model (CPU, seeded).

Two stages:

1. **Copy warm-up** -- random token sequences shown twice, with the loss on
   the second copy only. On the corpus alone a model this small sits on a long
   plateau before it discovers copying earlier tokens (most name positions are
   unpredictable, and their gradient noise drowns the copying signal); IOI is
   built on copying, so we give the model that skill first.
2. **Language modelling** on packed rows of the synthetic corpus. Every token
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

from demo.config import TrainConfig
from demo.corpus import CorpusGenerator, Example
from demo.metrics import ScoredPrompt
from demo.tokenization import encode_texts, pack_weighted_documents, pad_batch

__all__ = [
    "make_model",
    "build_lm_rows",
    "copy_warmup",
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
    for i, p, pa in zip(task_idx, prompts, answered):
        for j in range(len(p), min(len(pa), len(weights[i]))):
            weights[i][j] = answer_weight
    return texts, weights


def build_lm_rows(
    gen: CorpusGenerator,
    tokenizer: PreTrainedTokenizerBase,
    n_rows: int,
    context_size: int,
    mix: dict[str, float],
    answer_weight: float = 1.0,
    chunk_docs: int = 4_000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack freshly drawn documents into ``n_rows`` BOS-started rows.

    Returns:
        ``(tokens, weights)`` of shape ``[n_rows, context_size]``; ``weights``
        are per-target-token loss weights (see :func:`answer_weights`).
    """
    token_chunks: list[torch.Tensor] = []
    weight_chunks: list[torch.Tensor] = []
    have = 0
    while have < n_rows:
        docs, weights = answer_weights(tokenizer, gen.take(chunk_docs, mix), answer_weight)
        tokens, w = pack_weighted_documents(docs, weights, context_size, tokenizer.bos_token_id)
        token_chunks.append(tokens)
        weight_chunks.append(w)
        have += tokens.shape[0]
    return torch.cat(token_chunks)[:n_rows], torch.cat(weight_chunks)[:n_rows]


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


def weighted_lm_loss(model: GPT2LMHeadModel, tokens: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted and plain next-token cross-entropy (nats) of a batch of rows.

    Returns:
        ``(weighted_mean, plain_mean)``; only the first carries gradients.
    """
    logits = model(input_ids=tokens).logits[:, :-1]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none")
    w = weights[:, 1:].reshape(-1)
    return (ce * w).sum() / w.sum(), ce.detach().mean()


@torch.no_grad()
def hf_first_token_accuracy(model: GPT2LMHeadModel, prompts: Sequence[ScoredPrompt], pad_id: int) -> dict[str, float]:
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
    tokens: torch.Tensor,
    weights: torch.Tensor,
    probe: Sequence[ScoredPrompt] = (),
) -> list[dict[str, Any]]:
    """Stage 2: one pass over ``tokens`` (``lm_batch_rows`` rows per step).

    Args:
        tokens: Packed rows, ``LongTensor[lm_steps * lm_batch_rows, n_ctx]``.
        weights: Per-token loss weights of the same shape.
        probe: Held-out prompts whose accuracy is logged every ``lm_probe_every`` steps.

    Returns:
        Training curve ``[{"step", "loss", "probe_accuracy"?}]``; ``loss`` is the
        plain (unweighted) next-token loss in nats, averaged over 25 steps.
    """
    opt = _optimizer(cfg, model)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _schedule(cfg.lm_warmup_steps, cfg.lm_steps, cfg.lm_final_lr_fraction)
    )
    model.train()
    pad_id = model.config.bos_token_id
    curve: list[dict[str, Any]] = []
    recent: list[float] = []
    start = time.perf_counter()
    rows = cfg.lm_batch_rows
    for step in range(cfg.lm_steps):
        batch = slice(step * rows, (step + 1) * rows)
        loss, plain = weighted_lm_loss(model, tokens[batch], weights[batch])
        loss.backward()
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
                (step + 1) * rows * tokens.shape[1] / (time.perf_counter() - start),
                point.get("probe_accuracy", ""),
            )
    model.eval()
    return curve
