"""Readers never wait: a reader during an ingest reads the writer's consistent snapshot at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from featuregraph.errors import DatabaseError, DatabaseLockedError
from featuregraph.query.reader import open_reader
from featuregraph.store.db import LOCK_WAIT_ENV, open_database
from featuregraph.store.snapshot import snapshot_path, writer_session
from featuregraph.store.writer import writer_file

TESTS = Path(__file__).parent
EDGES_PER_PROMPT = 7

# A writer that holds the file like an ingest (in a writer session, as ingests are): one transaction per
# group of 3 prompts, a snapshot after every commit (interval 0), a pause between commits, then waits to
# be told to stop; leaving the session closes the database and removes the snapshot.
WRITER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from query_graphs import new_run, prompt_result
from featuregraph.store.db import open_database
from featuregraph.store.runs import write_prompt_results
import featuregraph.store.snapshot as snapshot
from featuregraph.store.snapshot import writer_session
snapshot.COPY_SHARE = 1.0  # publish after every commit: the copy-time budget has its own (fake-clock) test
path, groups = sys.argv[1], int(sys.argv[3])
db = open_database(path)
with writer_session(path, {"what": "test writer"}, db) as pub:
    pub.every_s = 0
    run = new_run(db)
    pub.start(db)
    for g in range(groups):
        prompts = range(3 * g, 3 * g + 3)
        write_prompt_results(db, run, [prompt_result(p, [(0, p % 5, 1, k, 0.25 + k) for k in range({k})]) for p in prompts])
        pub.after_commit(db)
        Path(path + ".progress").write_text(str(g + 1))
        time.sleep(0.15)
    pub.publish(db)  # the last commit too, whatever the copy-time budget said
    while not Path(path + ".stop").exists():
        time.sleep(0.05)
""".replace("{k}", str(EDGES_PER_PROMPT))


def _wait_for(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_duckdb_refuses_a_second_process_while_one_writes(tmp_path):
    """The fact this design works around: no read-only open of a file another process writes."""
    path = tmp_path / "fg.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t AS SELECT 1 AS x")
    probe = f"import duckdb; duckdb.connect({str(path)!r}, read_only=True)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    con.close()
    assert proc.returncode != 0 and "lock" in proc.stderr.lower()


def test_a_reader_during_an_ingest_sees_a_consistent_snapshot_without_waiting(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_WAIT_ENV, "0")  # a reader that had to wait would fail at once
    path = tmp_path / "fg.duckdb"
    with open_database(path):
        pass
    groups = 12
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path), str(TESTS), str(groups)])
    try:
        _wait_for(lambda: snapshot_path(path).exists())
        seen, slowest = [], 0.0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            start = time.perf_counter()
            with open_reader(path) as db:
                slowest = max(slowest, time.perf_counter() - start)
                assert db.snapshot_time is not None
                prompts, edges, summed, recurring = db.fetchone(
                    "SELECT (SELECT count(*) FROM prompts), (SELECT count(*) FROM edges), "
                    "(SELECT coalesce(sum(n), 0) FROM edge_summary), (SELECT count(*) FROM edge_occurrences)"
                )
            # whole commits only, and the summary agrees with the edges it was read with
            assert prompts % 3 == 0 and edges == EDGES_PER_PROMPT * prompts == summed
            recurring_want = sum(EDGES_PER_PROMPT * (prompts // 5 + (r < prompts % 5)) for r in range(5)
                                 if prompts // 5 + (r < prompts % 5) >= 2)  # fmt: skip
            assert recurring == recurring_want
            seen.append(prompts)
            if prompts == 3 * groups:
                break
            assert writer.poll() is None
        assert seen[-1] == 3 * groups
        assert seen == sorted(seen) and len(set(seen)) >= 3  # it followed the ingest
        assert slowest < 5.0  # no lock wait (the wait is 0: a wait would have raised)
        Path(str(path) + ".stop").write_text("")
        assert writer.wait(60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    assert not snapshot_path(path).exists()
    with open_reader(path) as db:  # the writer is gone: the database itself
        assert db.snapshot_time is None
        assert db.fetchone("SELECT count(*) FROM edges")[0] == EDGES_PER_PROMPT * 3 * groups


def test_without_a_snapshot_a_locked_database_is_reported_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_WAIT_ENV, "0")
    path = tmp_path / "fg.duckdb"
    with open_database(path):
        pass
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); "
                               "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(DatabaseLockedError):
            open_reader(path)
    finally:
        holder.kill()
        holder.wait()


# Holds the file as a writer would, in a writer session that announces itself in DB.writer.json
# unless told not to.
HOLDER = """
import sys, time, duckdb
from featuregraph.store.snapshot import writer_session
con = duckdb.connect(sys.argv[1])
with writer_session(sys.argv[1], {"what": "test writer"}) as session:
    if sys.argv[2] == "note":
        session.announce()
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("case", ["current", "writer_killed", "older_than_the_writer", "no_note"])
def test_only_the_live_writers_own_snapshot_is_read(tmp_path, monkeypatch, case):
    """A snapshot is read only if the writer that holds the file now published it: one left by a
    writer killed with SIGKILL (it could not remove it) may be far behind the database."""
    monkeypatch.setenv(LOCK_WAIT_ENV, "0")
    path = tmp_path / "fg.duckdb"
    with open_database(path):
        pass
    snap = snapshot_path(path)
    shutil.copyfile(path, snap)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "none" if case == "no_note" else "note"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        if case == "writer_killed":  # the note names a process that is gone
            note = json.loads(writer_file(path).read_text())
            dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
            writer_file(path).write_text(json.dumps({**note, "pid": int(dead.stdout)}))
        if case == "older_than_the_writer":
            hour_ago = time.time() - 3600
            os.utime(snap, (hour_ago, hour_ago))
        if case == "current":
            os.utime(snap)  # published during the writer's session
            with open_reader(path) as db:
                assert db.snapshot_time == snap.stat().st_mtime
        else:
            with pytest.raises(DatabaseLockedError):
                open_reader(path)
    finally:
        holder.kill()
        holder.wait()


def test_a_writer_session_removes_its_snapshot_and_note_on_error_and_never_anothers(tmp_path):
    path = tmp_path / "fg.duckdb"
    db = open_database(path)
    with pytest.raises(RuntimeError), writer_session(path, {"what": "test writer"}, db) as snapshots:
        snapshots.start(db)
        assert snapshot_path(path).exists() and writer_file(path).exists()
        raise RuntimeError("the ingest failed")
    assert not snapshot_path(path).exists() and not writer_file(path).exists()
    with pytest.raises(DatabaseError, match="closed"):
        db.execute("SELECT 1")  # closed by the session
    # A session that never got the file (a distributed driver that gave up waiting for the lock)
    # leaves the snapshot of the writer that has it alone.
    snapshot_path(path).write_bytes(b"another writer's snapshot")
    with pytest.raises(DatabaseLockedError), writer_session(path, {"what": "test writer"}):
        raise DatabaseLockedError("locked")
    assert snapshot_path(path).read_bytes() == b"another writer's snapshot"


@pytest.mark.parametrize("costs", ["constant", "growing", "noisy"])
def test_snapshot_copies_stay_within_a_tenth_of_a_long_ingest(monkeypatch, costs):
    """The copy-time budget holds over the whole ingest, the start's copy included, even when each
    copy takes longer than the one before (a growing database, a busier disk); a fake clock."""
    import random

    from featuregraph.store import snapshot

    clock = [0.0]
    rng = random.Random(0)
    spent = []

    def fake_publish(db):
        n = len(spent)
        cost = {"constant": 5.0, "growing": 5.0 + 0.05 * n, "noisy": rng.uniform(2.0, 8.0)}[costs]
        clock[0] += cost
        spent.append(cost)
        return cost

    monkeypatch.setattr(snapshot, "_clock", lambda: clock[0])
    monkeypatch.setattr(snapshot, "publish_snapshot", fake_publish)
    db = type("FakeDb", (), {"read_only": False, "path": "unused.duckdb"})()
    pub = snapshot.SnapshotPublisher("unused.duckdb", note=None, every_s=0)
    pub.started, pub.started_at = True, clock[0]
    pub.publish(db)  # the start's copy
    worst = 0.0
    while clock[0] < 3600:
        clock[0] += 1.0  # a commit a second
        pub.after_commit(db)
        if clock[0] > 200:  # some 40 copy times in: the start's copy is paid back by then
            worst = max(worst, sum(spent) / clock[0])
    assert sum(spent) == pytest.approx(pub.seconds)
    slack = {"constant": 0.0, "growing": 0.05, "noisy": 6.0}[costs]  # one copy's excess over its estimate
    assert sum(spent) <= snapshot.COPY_SHARE * clock[0] + slack
    assert worst <= snapshot.COPY_SHARE + slack / 200
    assert sum(spent) >= 0.8 * snapshot.COPY_SHARE * clock[0]  # and it does publish, near the share
