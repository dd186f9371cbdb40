"""The background writer (ingest/writer_thread.py): order, back-pressure, one-line errors, nothing half-written."""

from __future__ import annotations

import threading

import duckdb
import pytest
from helpers import tiny_config

from featuregraph.errors import DatabaseError
from featuregraph.ingest import run as run_module
from featuregraph.ingest.run import ingest
from featuregraph.ingest.writer_thread import WriterThread
from featuregraph.store.runs import insert_prompt_tables, prompt_tables


def test_batches_are_written_in_order_and_close_waits_for_all():
    written, gate = [], threading.Event()

    def write(batch):
        gate.wait(5)
        written.append(batch)

    w = WriterThread(write, max_pending=2)
    w.submit([1])
    gate.set()
    for i in range(2, 8):
        w.submit([i])
    w.close()
    assert written == [[i] for i in range(1, 8)] and w.batches == 7


def test_a_full_queue_blocks_the_sweep_and_counts_the_wait():
    release = threading.Event()
    w = WriterThread(lambda batch: release.wait(5), max_pending=1)
    w.submit("a")  # being written (blocked)
    w.submit("b")  # queued: the queue is now full
    t = threading.Timer(0.3, release.set)
    t.start()
    w.submit("c")  # must wait until the writer takes "b"
    w.close()
    assert w.wait_s >= 0.2


def test_a_write_error_surfaces_as_one_line_and_stops_later_writes():
    written = []

    def write(batch):
        if batch == "bad":
            raise RuntimeError("disk full\nsecond line of a long traceback-ish message")
        written.append(batch)

    w = WriterThread(write, max_pending=8)
    w.submit("ok")
    w.submit("bad")
    w.submit("later")  # queued before the failure is seen: dropped, not written
    with pytest.raises(DatabaseError) as e:
        w.close()
    assert str(e.value) == "writing results to the database failed: RuntimeError: disk full"
    assert written == ["ok"]


def test_ingest_with_a_failing_write_leaves_whole_prompts_only(tiny_assets, tmp_path, monkeypatch):
    """The second batch's write fails inside its transaction: the run ends failed, with one line,
    and the database holds exactly the first batch's prompts, each complete."""
    real = run_module.write_prompt_results
    calls = []

    def flaky(db, run_id, results):
        calls.append([r.prompt_id for r in results])
        if len(calls) == 2:
            with db.transaction():  # part of the batch goes in, then the write fails
                insert_prompt_tables(db, run_id, prompt_tables(run_id, results[:1]))
                raise OSError("simulated failure while writing")
        real(db, run_id, results)

    monkeypatch.setattr(run_module, "write_prompt_results", flaky)
    db = tmp_path / "w.duckdb"
    with pytest.raises(DatabaseError, match="^writing results to the database failed: OSError: simulated failure while writing$"):
        ingest(db, tiny_assets / "prompts.txt", tiny_config(tiny_assets), progress=False, commit_every=1, prompts_per_forward=1)
    con = duckdb.connect(str(db), read_only=True)
    try:
        stored = sorted(r[0] for r in con.execute("SELECT prompt_id FROM prompts").fetchall())
        assert stored == sorted(calls[0])
        edge_prompts = {r[0] for r in con.execute("SELECT DISTINCT prompt_id FROM edges").fetchall()}
        assert edge_prompts <= set(stored)
        assert con.execute("SELECT status FROM runs").fetchall() == [("failed",)]
    finally:
        con.close()


def test_background_and_inline_writes_store_the_same(tiny_assets, tmp_path):
    config = tiny_config(tiny_assets)
    rows = {}
    for mode in (True, False):
        db = tmp_path / f"{mode}.duckdb"
        ingest(db, tiny_assets / "prompts.txt", config, progress=False, commit_every=1, background_writes=mode)
        con = duckdb.connect(str(db), read_only=True)
        rows[mode] = [con.execute(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY ALL").fetchall() for t in ("edges", "logit_effects", "ablations")]
        con.close()
    assert rows[True] == rows[False] and rows[True][0]
