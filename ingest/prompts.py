"""Reading prompt files and tokenizing them for the sweep.

Formats (ingest/sources.py): ``.txt`` (one prompt per line; blank lines are skipped),
``.jsonl`` (one JSON object per line with a ``text`` string, optional ``id``, ``tag``,
``tags`` and ``metadata``; other keys are kept as metadata), ``.parquet`` (the same as
columns) and ``hf:NAME`` datasets. Problems are reported with the source and line,
before anything is computed: as a one-line error (``bad_prompts="error"``) or as rows for
``ingest_errors`` (``bad_prompts="record"``). Prompts whose text repeats an earlier one
are skipped (deduplicated by content) and listed there too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featuregraph.errors import InputError
from featuregraph.ingest.config import TOO_LONG_POLICIES
from featuregraph.ingest.sources import RawPrompt, read_source
from featuregraph.ingest.sweep import PromptInput

EXCERPT_CHARS = 200


def read_prompts(path: str | Path, bad_prompts: str = "error") -> list[RawPrompt]:
    """Read prompts from a .txt, .jsonl or .parquet file or an ``hf:`` dataset; with
    ``bad_prompts="error"`` raise :class:`InputError` naming the first bad line."""
    return read_source(path, bad_prompts)


def prompts_sha256(prompts: list[RawPrompt]) -> str:
    """Hash of the prompt list (texts, tags, metadata, ids, order): part of a run's identity."""
    h = hashlib.sha256()
    for p in prompts:
        fields: list[Any] = [p.text, p.tag, p.metadata]
        if p.external_id is not None or p.tags is not None or p.problem is not None:
            fields += [p.external_id, p.tags, p.problem]  # absent: the same hash as before bulk ingest
        h.update(json.dumps(fields, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class PromptError:
    """A prompt that is not swept: a row of ``ingest_errors``."""

    prompt_index: int  # the prompt_id it would have had
    source_line: int
    reason: str  # empty | too_long | too_short | no_tokens | undecodable | invalid_record | duplicate
    detail: str
    excerpt: str
    external_id: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "prompt_index": self.prompt_index,
            "external_id": self.external_id,
            "source_line": self.source_line,
            "reason": self.reason,
            "detail": self.detail,
            "excerpt": self.excerpt,
        }


@dataclass(frozen=True)
class PreparedPrompts:
    """Tokenized prompts ready to sweep, the prompts left out, and each prompt's id and tags."""

    inputs: list[PromptInput]
    errors: list[PromptError]
    extras: dict[int, tuple[str | None, list[str] | None]]  # prompt_id -> (external_id, tags)

    def annotate(self, results: list) -> list:
        """Give sweep results (PromptResult) their prompts' external ids and tags."""
        for r in results:
            r.external_id, r.tags = self.extras.get(r.prompt_id, (None, None))
        return results


def excerpt(text: str) -> str:
    """The start of a text, with bytes that were not UTF-8 written as escapes."""
    head = text[:EXCERPT_CHARS]
    try:
        return head.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return head.encode("utf-8", "backslashreplace").decode("utf-8")


def prepare_prompts(
    model: Any,
    prompts: list[RawPrompt],
    prepend_bos: bool,
    source: str,
    bad_prompts: str = "error",
    too_long: str = "reject",
    read_position: int = -1,
) -> PreparedPrompts:
    """Check, deduplicate and tokenize every prompt.

    Prompt ids are positions in the list (0-based); a prompt left out leaves a gap. With
    ``bad_prompts="error"`` the first bad prompt raises :class:`InputError` naming it, so
    that nothing is computed or written for a bad file; with ``"record"`` it becomes a
    :class:`PromptError`. A prompt longer than the model's context is bad (``too_long=
    "reject"``) or cut to the context and flagged in its metadata with
    ``truncated_from_tokens`` (``"truncate"``). A prompt whose text repeats an earlier
    prompt's is skipped under either policy and listed as a ``duplicate``.
    """
    if too_long not in TOO_LONG_POLICIES:
        raise InputError(f"unknown too-long policy {too_long!r}; choose from {', '.join(TOO_LONG_POLICIES)}")
    tokenizer = model.tokenizer
    n_ctx = int(model.cfg.n_ctx)
    if prepend_bos and tokenizer.bos_token_id is None:
        raise InputError("the tokenizer has no BOS token; pass --no-prepend-bos")
    cache: dict[int, str] = {}
    seen: dict[str, int] = {}
    out, errors, extras = [], [], {}

    def bad(pid: int, p: RawPrompt, reason: str, detail: str) -> None:
        if bad_prompts == "error":
            raise InputError(f"{source}:{p.line}: {detail}")
        errors.append(PromptError(pid, p.line, reason, detail, excerpt(p.text), p.external_id))

    for pid, p in enumerate(prompts):
        if p.problem is not None:
            bad(pid, p, *p.problem)
            continue
        if not p.text.strip():
            bad(pid, p, "empty", "empty prompt")
            continue
        digest = hashlib.sha256(p.text.encode("utf-8")).hexdigest()
        if digest in seen:
            first = seen[digest]
            errors.append(PromptError(pid, p.line, "duplicate", f"same text as prompt {first}", excerpt(p.text), p.external_id))
            continue
        seen[digest] = pid
        ids = tokenizer.encode(p.text, add_special_tokens=False)
        if prepend_bos:
            ids = [tokenizer.bos_token_id] + ids
        metadata = p.metadata
        if len(ids) > n_ctx:
            if too_long == "reject":
                bad(pid, p, "too_long", f"prompt too long: {len(ids)} tokens, the model's context is {n_ctx}")
                continue
            metadata = {**(metadata or {}), "truncated_from_tokens": len(ids)}
            ids = ids[:n_ctx]
        if len(ids) <= (1 if prepend_bos else 0):
            bad(pid, p, "no_tokens", "prompt has no tokens")
            continue
        if read_position >= len(ids):
            bad(pid, p, "too_short", f"prompt too short: {len(ids)} tokens, the read position is {read_position}")
            continue
        strings = []
        for t in ids:
            if t not in cache:
                cache[t] = tokenizer.decode([t])
            strings.append(cache[t])
        out.append(PromptInput(pid, p.text, ids, strings, p.tag, metadata))
        extras[pid] = (p.external_id, list(p.tags) if p.tags is not None else None)
    return PreparedPrompts(out, errors, extras)


def tokenize_prompts(model: Any, prompts: list[RawPrompt], prepend_bos: bool, source: str) -> list[PromptInput]:
    """Tokenize every prompt, raising :class:`InputError` naming the first bad one
    (:func:`prepare_prompts` with ``bad_prompts="error"``)."""
    return prepare_prompts(model, prompts, prepend_bos, source).inputs
