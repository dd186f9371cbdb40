"""Where prompts come from: .txt, .jsonl and .parquet files, and Hugging Face datasets.

Every source yields records; a record is an object with a string ``text`` and, optionally,
``id`` (string or integer: the prompt's external id), ``tag`` (string), ``tags`` (list of
strings) and ``metadata`` (object). Its other keys are metadata too. A ``.txt`` line is a
record with only a text.

With ``bad="error"`` the first unusable record stops the read with a one-line
:class:`InputError` naming it (source and line); with ``bad="record"`` it is kept as a
:class:`RawPrompt` whose ``problem`` says what is wrong, so that the run can list it in
``ingest_errors`` and go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qs, urlsplit

from featuregraph.errors import InputError

FORMATS = (".txt", ".jsonl", ".parquet")
HF_PREFIX = "hf:"
BAD_PROMPT_POLICIES = ("error", "record")


@dataclass(frozen=True)
class RawPrompt:
    text: str
    line: int  # 1-based line (row, for Parquet and datasets) in the source
    tag: str | None = None
    metadata: dict[str, Any] | None = None
    external_id: str | None = None
    tags: tuple[str, ...] | None = None
    # Set when the record cannot be used (bad="record"): (reason, one-line detail).
    problem: tuple[str, str] | None = None


def is_dataset_name(source: str | Path) -> bool:
    return str(source).startswith(HF_PREFIX)


def read_source(source: str | Path, bad: str = "error") -> list[RawPrompt]:
    """Read every record of a prompt file or ``hf:`` dataset (see the module docstring)."""
    if bad not in BAD_PROMPT_POLICIES:
        raise InputError(f"unknown bad-prompt policy {bad!r}; choose from {', '.join(BAD_PROMPT_POLICIES)}")
    if is_dataset_name(source):
        prompts = _read_dataset(str(source), bad)
    else:
        path = Path(source)
        if path.suffix not in FORMATS:
            raise InputError(
                f"{path}: unsupported prompt file type {path.suffix!r}; use {', '.join(FORMATS)} or hf:DATASET"
            )
        if path.suffix == ".parquet":
            prompts = _read_parquet(path, bad)
        else:
            prompts = _read_lines(path, bad)
    if not prompts:
        raise InputError(f"{source}: no prompts in {'dataset' if is_dataset_name(source) else 'file'}")
    return prompts


def _unusable(bad: str, where: str, line: int, reason: str, detail: str, text: str = "") -> RawPrompt:
    if bad == "error":
        raise InputError(f"{where}:{line}: {detail}")
    return RawPrompt(text, line, problem=(reason, detail))


def undecodable(text: str) -> bool:
    """True for text holding bytes that were not UTF-8 (or lone surrogates from JSON escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_lines(path: Path, bad: str) -> list[RawPrompt]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such prompt file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read prompt file: {exc}") from None
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if bad == "error":
            raise InputError(f"{path}: cannot read prompt file: {exc}") from None
        # Keep the good lines; the undecodable bytes survive as lone surrogates, found below.
        content = data.decode("utf-8", errors="surrogateescape")
    prompts = []
    for n, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        if undecodable(line):
            prompts.append(_unusable(bad, str(path), n, "undecodable", "undecodable text (not UTF-8)", line))
            continue
        if path.suffix == ".txt":
            prompts.append(RawPrompt(line, n))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            prompts.append(_unusable(bad, str(path), n, "invalid_record", f"not valid JSON ({exc.msg})", line))
            continue
        prompts.append(_checked(from_record(obj, n, str(path), bad), str(path), bad))
    return prompts


def _checked(prompt: RawPrompt, where: str, bad: str) -> RawPrompt:
    """Text that cannot be stored as UTF-8 (lone surrogates) is unusable."""
    if prompt.problem is None and undecodable(prompt.text):
        return _unusable(bad, where, prompt.line, "undecodable", "undecodable text (not UTF-8)", prompt.text)
    return prompt


def from_record(obj: Any, line: int, where: str, bad: str, text_key: str = "text") -> RawPrompt:
    """One record (a dict from JSON, Parquet or a dataset) as a :class:`RawPrompt`."""
    if not isinstance(obj, dict) or not isinstance(obj.get(text_key), str):
        excerpt = json.dumps(obj, default=str)[:200]
        return _unusable(bad, where, line, "invalid_record", f"expected an object with a string {text_key!r}", excerpt)
    text = obj[text_key]
    tag = obj.get("tag")
    if tag is not None and not isinstance(tag, str):
        return _unusable(bad, where, line, "invalid_record", "'tag' must be a string", text)
    ext = obj.get("id")
    if ext is not None and (isinstance(ext, bool) or not isinstance(ext, (str, int))):
        return _unusable(bad, where, line, "invalid_record", "'id' must be a string or an integer", text)
    tags = obj.get("tags")
    if tags is not None and (not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags)):
        return _unusable(bad, where, line, "invalid_record", "'tags' must be a list of strings", text)
    meta = {k: v for k, v in obj.items() if k not in (text_key, "tag", "id", "tags", "metadata")}
    given = obj.get("metadata")
    if isinstance(given, dict):
        meta = {**given, **meta}
    elif given is not None:
        meta = {"metadata": given, **meta}
    if tags is not None:
        tags = tuple(tags) if tag is None or tag in tags else (tag, *tags)
        tag = tag if tag is not None else (tags[0] if tags else None)
    return RawPrompt(
        text,
        line,
        tag,
        _jsonable(meta) or None,
        None if ext is None else str(ext),
        tags,
    )


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata as plain JSON values (Parquet and datasets hand over dates, numpy numbers...)."""
    return json.loads(json.dumps(value, default=str)) if value else value


def _records_from_rows(rows: Iterable[dict[str, Any]], where: str, bad: str, text_key: str) -> list[RawPrompt]:
    prompts = []
    for n, row in enumerate(rows, start=1):
        if row.get(text_key) is None:
            prompts.append(_unusable(bad, where, n, "invalid_record", f"no {text_key!r} value"))
            continue
        prompts.append(_checked(from_record(row, n, where, bad, text_key), where, bad))
    return prompts


def _read_parquet(path: Path, bad: str) -> list[RawPrompt]:
    import pyarrow.parquet as pq

    if not path.exists():
        raise InputError(f"{path}: no such prompt file")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several kinds for damaged files
        raise InputError(f"{path}: cannot read Parquet file: {str(exc).splitlines()[0]}") from None
    if "text" not in table.column_names:
        raise InputError(f"{path}: no 'text' column (columns: {', '.join(table.column_names)})")
    return _records_from_rows(_iter_rows(table), str(path), bad, "text")


def _iter_rows(table: Any) -> Iterator[dict[str, Any]]:
    for batch in table.to_batches(max_chunksize=4096):
        yield from batch.to_pylist()


@dataclass(frozen=True)
class DatasetSpec:
    """``hf:NAME?config=C&split=S&column=text&limit=N``: a Hugging Face dataset by name."""

    name: str
    config: str | None = None
    split: str = "train"
    column: str = "text"
    limit: int | None = None

    @classmethod
    def parse(cls, source: str) -> "DatasetSpec":
        parts = urlsplit(source[len(HF_PREFIX) :])
        name = parts.path.strip()
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"config", "split", "column", "limit"}
        if not name or unknown:
            raise InputError(
                f"{source}: expected hf:NAME?config=C&split=S&column=text&limit=N"
                + (f" (unknown {', '.join(sorted(unknown))})" if unknown else "")
            )
        try:
            limit = int(query["limit"]) if "limit" in query else None
        except ValueError:
            raise InputError(f"{source}: limit must be an integer") from None
        return cls(name, query.get("config"), query.get("split", "train"), query.get("column", "text"), limit)


def _read_dataset(source: str, bad: str) -> list[RawPrompt]:
    spec = DatasetSpec.parse(source)
    try:
        import datasets
    except ImportError:
        raise InputError(f"{source}: reading Hugging Face datasets needs `pip install datasets`") from None
    try:
        rows = datasets.load_dataset(spec.name, spec.config, split=spec.split, streaming=True)
        if spec.limit is not None:
            rows = rows.take(spec.limit)
        rows = list(rows)
    except Exception as exc:  # network, unknown dataset, unknown split: one line whatever it is
        raise InputError(f"{source}: cannot load dataset: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    return _records_from_rows(rows, source, bad, spec.column)


__all__ = ["RawPrompt", "read_source", "from_record", "DatasetSpec", "is_dataset_name", "FORMATS"]
