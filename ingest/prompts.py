"""Reading prompt files and tokenizing them for the sweep.

Formats: ``.txt`` (one prompt per line; blank lines are skipped) and ``.jsonl`` (one JSON
object per line with a ``text`` string, optional ``tag`` string; other keys are kept as
metadata). Problems are reported with the file and line, before anything is computed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featuregraph.errors import InputError
from ingest.sweep import PromptInput

FORMATS = (".txt", ".jsonl")


@dataclass(frozen=True)
class RawPrompt:
    text: str
    line: int  # 1-based line in the source file
    tag: str | None = None
    metadata: dict[str, Any] | None = None


def read_prompts(path: str | Path) -> list[RawPrompt]:
    """Read prompts from a .txt or .jsonl file; raise :class:`InputError` naming the bad line."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise InputError(f"{path}: unsupported prompt file type {path.suffix!r}; use {' or '.join(FORMATS)}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such prompt file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read prompt file: {exc}") from None
    prompts = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            prompts.append(RawPrompt(line, n))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise InputError(f"{path}:{n}: expected an object with a string 'text'")
        tag = obj.get("tag")
        if tag is not None and not isinstance(tag, str):
            raise InputError(f"{path}:{n}: 'tag' must be a string")
        meta = {k: v for k, v in obj.items() if k not in ("text", "tag")}
        prompts.append(RawPrompt(obj["text"], n, tag, meta or None))
    if not prompts:
        raise InputError(f"{path}: no prompts in file")
    return prompts


def prompts_sha256(prompts: list[RawPrompt]) -> str:
    """Hash of the prompt list (texts, tags, metadata, order): part of a run's identity."""
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p.text, p.tag, p.metadata], sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


def tokenize_prompts(model: Any, prompts: list[RawPrompt], prepend_bos: bool, source: str) -> list[PromptInput]:
    """Tokenize every prompt, checking for empty and too-long ones first.

    Prompt ids are positions in the list (0-based). Raises :class:`InputError` naming the
    first bad prompt, so that nothing is computed or written for a bad file.
    """
    tokenizer = model.tokenizer
    n_ctx = int(model.cfg.n_ctx)
    cache: dict[int, str] = {}
    out = []
    for pid, p in enumerate(prompts):
        where = f"{source}:{p.line}"
        if not p.text.strip():
            raise InputError(f"{where}: empty prompt")
        ids = tokenizer.encode(p.text, add_special_tokens=False)
        if prepend_bos:
            if tokenizer.bos_token_id is None:
                raise InputError("the tokenizer has no BOS token; pass --no-prepend-bos")
            ids = [tokenizer.bos_token_id] + ids
        if len(ids) > n_ctx:
            raise InputError(
                f"{where}: prompt too long: {len(ids)} tokens, the model's context is {n_ctx}"
            )
        if len(ids) <= (1 if prepend_bos else 0):
            raise InputError(f"{where}: prompt has no tokens")
        strings = []
        for t in ids:
            if t not in cache:
                cache[t] = tokenizer.decode([t])
            strings.append(cache[t])
        out.append(PromptInput(pid, p.text, ids, strings, p.tag, p.metadata))
    return out
