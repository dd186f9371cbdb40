"""Bulk ingest inputs: Parquet and datasets, ids/tags/metadata, deduplication, bad prompts recorded."""

from __future__ import annotations

import json
import re
import sys
import types

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import tiny_config

from featuregraph.errors import InputError
from featuregraph.ingest.run import ingest
from featuregraph.ingest.sources import DatasetSpec, read_source

RECORDS = [
    {"text": "The quick brown fox", "id": "a1", "tags": ["animal", "short"], "metadata": {"source": "seed"}},
    {"text": "Copyright (C", "id": 7, "tag": "paren", "lang": "en"},
    {"text": "When Mary and John went to the store"},
]


def _rows(path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


PROMPT_COLS = "SELECT prompt_id, text, tag, tags, external_id, metadata FROM prompts ORDER BY prompt_id"


def test_jsonl_and_parquet_give_the_same_prompts_with_ids_tags_and_metadata(tiny_assets, tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    parquet = tmp_path / "p.parquet"
    pq.write_table(
        pa.table(
            {
                "text": [r["text"] for r in RECORDS],
                "id": ["a1", "7", None],
                "tag": [None, "paren", None],
                "tags": [["animal", "short"], None, None],
                "lang": [None, "en", None],
            }
        ),
        parquet,
    )
    config = tiny_config(tiny_assets, n_saes=2)
    ingest(tmp_path / "j.duckdb", jsonl, config, progress=False)
    ingest(tmp_path / "q.duckdb", parquet, config, progress=False)
    rows = _rows(tmp_path / "j.duckdb", PROMPT_COLS)
    assert [r[:5] for r in rows] == [
        (0, "The quick brown fox", "animal", ["animal", "short"], "a1"),
        (1, "Copyright (C", "paren", None, "7"),
        (2, "When Mary and John went to the store", None, None, None),
    ]
    assert json.loads(rows[0][5]) == {"source": "seed"} and json.loads(rows[1][5]) == {"lang": "en"}
    # Parquet: null columns are absent values, other columns metadata (nulls kept as null).
    qrows = _rows(tmp_path / "q.duckdb", PROMPT_COLS)
    assert [r[:5] for r in qrows] == [r[:5] for r in rows]
    # Tags and metadata are queryable.
    assert _rows(tmp_path / "j.duckdb", "SELECT prompt_id FROM prompts WHERE list_contains(tags, 'short')") == [(0,)]
    assert _rows(tmp_path / "j.duckdb", "SELECT prompt_id FROM prompts WHERE metadata->>'lang' = 'en'") == [(1,)]


def test_bad_prompts_are_recorded_and_the_run_goes_on(tiny_assets, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(
        b"The quick brown fox\n"
        b"caf\xe9 latin-1 bytes\n"  # not UTF-8
        + b"word " * 60 + b"\n"  # longer than the tiny model's 32 tokens
        b"Copyright (C\n"
        b"The quick brown fox\n"  # a duplicate of prompt 0
        b"A\n"
    )
    db = tmp_path / "fg.duckdb"
    summary = ingest(db, prompts, tiny_config(tiny_assets, n_saes=2), progress=False, bad_prompts="record")
    assert (summary.n_prompts, summary.n_swept) == (3, 3)
    assert _rows(db, "SELECT prompt_id, text FROM prompts ORDER BY 1") == [(0, "The quick brown fox"), (3, "Copyright (C"), (5, "A")]
    errors = _rows(db, "SELECT prompt_index, source_line, reason, detail, excerpt FROM ingest_errors ORDER BY 1")
    assert [e[:3] for e in errors] == [(1, 2, "undecodable"), (2, 3, "too_long"), (4, 5, "duplicate")]
    assert errors[0][4] == "caf\\xe9 latin-1 bytes"
    assert re.fullmatch(r"prompt too long: \d+ tokens, the model's context is 32", errors[1][3])
    assert errors[2][3] == "same text as prompt 0"
    assert _rows(db, "SELECT n_prompts, status FROM runs") == [(3, "complete")]

    # Without 'record', the first bad prompt still stops the run before anything is written.
    with pytest.raises(InputError, match=r"p.txt: cannot read prompt file"):
        ingest(tmp_path / "strict.duckdb", prompts, tiny_config(tiny_assets, n_saes=2), progress=False)
    assert not (tmp_path / "strict.duckdb").exists()


def test_too_long_prompts_can_be_truncated_and_are_flagged(tiny_assets, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"text": "word " * 60, "topic": "x"}) + "\n" + json.dumps({"text": "A"}) + "\n")
    db = tmp_path / "fg.duckdb"
    ingest(db, prompts, tiny_config(tiny_assets, n_saes=2), progress=False, too_long="truncate")
    rows = _rows(db, "SELECT prompt_id, n_tokens, metadata FROM prompts ORDER BY 1")
    meta = json.loads(rows[0][2])
    assert rows[0][1] == 32 and meta["topic"] == "x" and meta["truncated_from_tokens"] > 32
    assert rows[1][:2] == (1, 2) and rows[1][2] is None
    assert _rows(db, "SELECT count(*) FROM ingest_errors") == [(0,)]


def test_hugging_face_datasets_by_name_offline(monkeypatch):
    calls = []

    class FakeStream(list):
        def take(self, n):
            return FakeStream(self[:n])

    def load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        return FakeStream([{"sentence": "The quick brown fox", "label": 1}, {"sentence": None}, {"sentence": "A"}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    spec = "hf:glue?config=sst2&split=validation&column=sentence&limit=3"
    assert DatasetSpec.parse(spec) == DatasetSpec("glue", "sst2", "validation", "sentence", 3)
    prompts = read_source(spec, bad="record")
    assert calls == [("glue", "sst2", "validation", True)]
    assert [(p.text, p.line, p.metadata, p.problem) for p in prompts] == [
        ("The quick brown fox", 1, {"label": 1}, None),
        ("", 2, None, ("invalid_record", "no 'sentence' value")),
        ("A", 3, None, None),
    ]
    with pytest.raises(InputError, match=r"hf:glue.*:2: no 'sentence' value"):
        read_source(spec)
    with pytest.raises(InputError, match=r"unknown bogus"):
        DatasetSpec.parse("hf:glue?bogus=1")

    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed
    with pytest.raises(InputError, match=r"needs `pip install datasets`"):
        read_source("hf:glue")
