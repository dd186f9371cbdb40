"""Quality metrics for the bundled model and SAEs.

Shared by the training script (which records them in the manifest) and the
tests (which re-measure them), so both use exactly the same definitions:

* **Task accuracy** -- fraction of prompts whose greedy next token (argmax of
  the logits at the last prompt position, BOS prepended) equals the first
  token of the expected answer. ``full_answer`` accuracy additionally requires
  every later answer token to be the greedy choice given the previous ones
  (only differs for acronyms, e.g. ``"DI"`` -> ``D``, ``I``).
* **Explained variance** of an SAE on a token set ``X`` (rows = token
  positions, columns = residual dimensions):
  ``1 - sum ||x - sae(x)||^2 / sum ||x - mean(X)||^2``.
* **Mean L0** -- average number of SAE features with activation > 0 per token.
* **Dead fraction** -- fraction of SAE features that never fire on the token set.
* **Cross-entropy** -- mean next-token loss in nats over every position of
  fixed-length rows.

SAE statistics exclude positions holding ``<|endoftext|>`` (the leading BOS
and document separators) and padding; the SAEs do reconstruct those positions
(they were trained on them) but their residual stream carries no text.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from sae_lens import SAE, HookedSAETransformer
from transformers import PreTrainedTokenizerBase

from featuregraph.demo.tokenization import encode_texts, pad_batch

__all__ = [
    "ScoredPrompt",
    "prepare_prompts",
    "task_accuracy",
    "sae_stats",
    "cross_entropy",
    "encode_contexts",
]


@dataclass(frozen=True)
class ScoredPrompt:
    """A task prompt ready for scoring.

    Attributes:
        tag: Task name.
        prompt_ids: BOS followed by the prompt's tokens.
        answer_ids: Tokens of the answer as they occur after the prompt (the
            first one is the scored next token).
    """

    tag: str
    prompt_ids: list[int]
    answer_ids: list[int]


def prepare_prompts(
    tokenizer: PreTrainedTokenizerBase, rows: Sequence[dict[str, str]]
) -> list[ScoredPrompt]:
    """Tokenize ``{"text", "tag", "answer"}`` rows.

    The answer tokens are read off the tokenization of ``text + answer`` so
    they are exactly what the model saw during training. Raises if the prompt
    tokens are not a prefix of that tokenization (a token-boundary mismatch
    would make the task ill-posed).
    """
    prompts = encode_texts(tokenizer, [r["text"] for r in rows])
    fulls = encode_texts(tokenizer, [r["text"] + r["answer"] for r in rows])
    bos = tokenizer.bos_token_id
    out: list[ScoredPrompt] = []
    for row, p, f in zip(rows, prompts, fulls, strict=True):
        if f[: len(p)] != p or len(f) == len(p):
            raise ValueError(f"answer {row['answer']!r} does not start a new token after {row['text']!r}")
        out.append(ScoredPrompt(tag=row["tag"], prompt_ids=[bos, *p], answer_ids=f[len(p) :]))
    return out


@torch.no_grad()
def task_accuracy(
    model: HookedSAETransformer,
    prompts: Sequence[ScoredPrompt],
    batch_size: int = 128,
) -> dict[str, dict[str, float]]:
    """Greedy accuracy per task tag.

    Returns:
        ``{tag: {"first_token": acc, "full_answer": acc, "n": count}}`` with
        accuracies in [0, 1].
    """
    first: dict[str, list[bool]] = defaultdict(list)
    full: dict[str, list[bool]] = defaultdict(list)
    pad_id = model.tokenizer.pad_token_id
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        seqs = [p.prompt_ids + p.answer_ids for p in chunk]
        tokens, _ = pad_batch(seqs, pad_id)
        preds = model(tokens.to(model.cfg.device)).argmax(-1).cpu()
        for i, p in enumerate(chunk):
            n_prompt = len(p.prompt_ids)
            # Position t predicts token t + 1; the answer starts at n_prompt.
            greedy = preds[i, n_prompt - 1 : n_prompt - 1 + len(p.answer_ids)].tolist()
            first[p.tag].append(greedy[0] == p.answer_ids[0])
            full[p.tag].append(greedy == p.answer_ids)
    return {
        tag: {
            "first_token": sum(first[tag]) / len(first[tag]),
            "full_answer": sum(full[tag]) / len(full[tag]),
            "n": len(first[tag]),
        }
        for tag in first
    }


def encode_contexts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """BOS-prefixed, right-padded tokens of independent contexts.

    Returns:
        ``(tokens, valid)``; ``valid`` is False on padding.
    """
    bos = tokenizer.bos_token_id
    seqs = [[bos, *ids] for ids in encode_texts(tokenizer, texts)]
    return pad_batch(seqs, bos)


@torch.no_grad()
def sae_stats(
    model: HookedSAETransformer,
    saes: dict[str, SAE],
    tokens: torch.Tensor,
    valid: torch.Tensor | None = None,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """Explained variance, mean L0 and dead fraction of each SAE.

    Args:
        model: Processed hooked model the SAEs were trained on.
        saes: SAEs keyed by hook name.
        tokens: ``LongTensor[B, T]`` of BOS-prefixed contexts.
        valid: Optional ``BoolTensor[B, T]``, False on padding.
        batch_size: Rows per forward pass.

    Returns:
        ``{hook: {"explained_variance", "mean_l0", "dead_fraction", "n_tokens"}}``
        over positions that are valid and not ``<|endoftext|>``.
    """
    if valid is None:
        valid = torch.ones_like(tokens, dtype=torch.bool)
    keep = valid & (tokens != model.tokenizer.bos_token_id)
    acts: dict[str, list[torch.Tensor]] = defaultdict(list)
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size].to(model.cfg.device)
        _, cache = model.run_with_cache(batch, names_filter=list(saes))
        mask = keep[start : start + batch_size]
        for hook in saes:
            acts[hook].append(cache[hook].cpu()[mask])

    stats: dict[str, dict[str, float]] = {}
    for hook, sae in saes.items():
        x = torch.cat(acts[hook]).to(sae.device, sae.dtype)
        feats = sae.encode(x)
        recon = sae.decode(feats)
        resid = (x - recon).pow(2).sum()
        total = (x - x.mean(0)).pow(2).sum()
        fired = (feats > 0)
        stats[hook] = {
            "explained_variance": float(1 - resid / total),
            "mean_l0": float(fired.sum(-1).float().mean()),
            "dead_fraction": float((~fired.any(0)).float().mean()),
            "n_tokens": int(x.shape[0]),
        }
    return stats


@torch.no_grad()
def cross_entropy(
    model: HookedSAETransformer,
    tokens: torch.Tensor,
    valid: torch.Tensor,
    saes: Sequence[SAE] = (),
    batch_size: int = 64,
) -> float:
    """Mean next-token cross-entropy (nats) over the real tokens of BOS-prefixed contexts.

    Args:
        tokens: ``LongTensor[B, T]`` from :func:`encode_contexts`.
        valid: ``BoolTensor[B, T]``, False on padding; only valid tokens are targets.
        saes: Spliced in all at once at their hooks, each replacing the activation
            by its reconstruction (error term off) at every position but the BOS
            (position 0), which the sweep never ablates and the SAEs are not
            trained on.
    """

    def splice(sae: SAE):
        def hook(act: torch.Tensor, hook) -> torch.Tensor:  # noqa: ARG001 - transformer_lens signature
            out = act.clone()
            out[:, 1:] = sae(act[:, 1:])
            return out

        return (sae.cfg.metadata.hook_name, hook)

    fwd_hooks = [splice(sae) for sae in saes]
    total, count = 0.0, 0
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size].to(model.cfg.device)
        mask = valid[start : start + batch_size, 1:].to(model.cfg.device)
        logits = model.run_with_hooks(batch, fwd_hooks=fwd_hooks)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="none"
        ).reshape(mask.shape)
        total += float(loss[mask].sum())
        count += int(mask.sum())
    return total / count
