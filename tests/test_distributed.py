"""Distributed ingest on a local Ray cluster of CPU workers: the same database as a single-process
ingest, also after kill -9 of a worker, of the merger, or of the whole job; readers during ingest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pytest
from helpers import insert_run, table_rows, tiny_config
from typer.testing import CliRunner

from featuregraph.cli import app
from featuregraph.ingest.run import ingest

try:
    import ray
except ImportError:
    ray = None

requires_ray = pytest.mark.skipif(ray is None, reason="Ray is not installed: pip install 'featuregraph[distributed]'")
ROOT = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses, taken when called: after ray.init it carries the
    cluster's auth mode, which a driver connecting to it needs."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)


CONTENT = {
    "prompts": "prompt_id, text, text_sha256, tag, tags, external_id, metadata, n_tokens, n_ablations",
    "tokens": "prompt_id, position, token_id, token",
    "top_next_tokens": "prompt_id, rank, token_id, prob, logp",
    "activations": "prompt_id, layer, position, feature, activation",
    "ablations": "prompt_id, layer, feature, n_positions, max_activation, read_activation",
    "edges": "prompt_id, up_layer, up_feature, down_layer, down_feature, weight",
    "logit_effects": "prompt_id, layer, feature, token_id, dlogp, dprob",
    "ingest_errors": "prompt_index, external_id, source_line, reason, detail, excerpt",
    "edge_occurrences": "up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight",
    "runs": "run_key, status, n_prompts, coefficient, edge_top_k, prepend_bos, device, dtype, config",
    "vocab": "token_id, token",
}


def content(path: Path) -> dict[str, list[tuple]]:
    """Every table's rows, in a canonical order (no timestamps); edge_summary's float sums depend on
    the order prompts were folded in, so they are compared to 1e-5 (see summary_close)."""
    summary = "up_layer, up_feature, down_layer, down_feature, sign, n, first_prompt_id, sum_weight, sum_sq_weight"
    return table_rows(path, {**CONTENT, "edge_summary": summary})


def assert_same_database(got: dict, want: dict) -> None:
    for table in CONTENT:
        assert got[table] == want[table], f"{table} differs"
    g, w = got["edge_summary"], want["edge_summary"]
    assert [r[:7] for r in g] == [r[:7] for r in w]
    np.testing.assert_allclose(np.array([r[7:] for r in g]), np.array([r[7:] for r in w]), rtol=1e-5, atol=1e-6)


N_SWEPT = 25  # the 24 good prompts and the truncated one


def write_prompts(path: Path) -> Path:
    """30 prompts: ids, tags, metadata; an empty one, a duplicate, a too-long one (truncated),
    invalid JSON and undecodable text."""
    short = ["The quick brown fox", "Copyright (C", "A", "When Mary and John went to the store"]
    records = [json.dumps({"text": f"{short[i % 4]} {i}", "id": f"p{i}", "tags": [f"t{i % 3}"], "n": i}) for i in range(24)]
    records[3:3] = [json.dumps({"text": "   "})]
    records[6:6] = [json.dumps({"text": "The quick brown fox 0"})]
    records[9:9] = [json.dumps({"text": "word " * 40})]
    records[12:12] = ["{not json"]
    records[15:15] = [json.dumps({"text": "lone \ud800 surrogate"})]
    path.write_text("\n".join(records) + "\n")
    return path


@pytest.fixture(scope="module")
def ray_address():
    if ray is None:
        pytest.skip("Ray is not installed: pip install 'featuregraph[distributed]'")
    try:
        ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - any failure to start means: cannot test here
        pytest.skip(f"Ray cannot start a local cluster here: {str(exc).splitlines()[0]}")
    yield ctx.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def pool(ray_address, tiny_assets):
    """Two warm CPU workers (half a logical CPU each, leaving one for a subprocess's worker)."""
    from featuregraph.ingest.distributed import WorkerPool

    p = WorkerPool(tiny_config(tiny_assets), workers=2, cpus_per_worker=0.5)
    yield p
    p.shutdown()


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("prompts") / "bulk.jsonl")


@pytest.fixture(scope="module")
def reference(tiny_assets, prompts, tmp_path_factory, pool) -> dict:
    """The single-process ingest of the same prompts (while the pool's workers load)."""
    db = tmp_path_factory.mktemp("reference") / "single.duckdb"
    ingest(db, prompts, tiny_config(tiny_assets), progress=False, bad_prompts="record", too_long="truncate")
    return content(db)


def distributed(db: Path, prompts: Path, assets: Path, pool, **kw):
    from featuregraph.ingest.distributed import ingest_distributed

    kw = {"commit_every": 4, "progress": False, "too_long": "truncate", **kw}
    return ingest_distributed(db, prompts, tiny_config(assets), pool=pool, **kw)


def _cli(assets: Path, prompts: Path, db: Path, *extra: str) -> list[str]:
    args = [sys.executable, "-m", "featuregraph.cli", "ingest", str(prompts), "--db", str(db), "--model", str(assets / "model"),
            "--device", "cpu", "--too-long", "truncate", "--commit-every", "4", "-q", "-v", *extra]  # fmt: skip
    for i in range(3):
        args += ["--sae", str(assets / f"sae{i}")]
    return args


@requires_ray
def test_distributed_ingest_equals_single_process(tiny_assets, prompts, reference, pool, tmp_path):
    db = tmp_path / "dist.duckdb"
    summary = distributed(db, prompts, tiny_assets, pool)
    assert (summary.n_prompts, summary.n_swept, summary.resumed) == (N_SWEPT, N_SWEPT, False)
    got = content(db)
    assert_same_database(got, reference)
    reasons = [r[3] for r in got["ingest_errors"]]
    assert reasons == ["empty", "duplicate", "invalid_record", "undecodable"]
    assert any(json.loads(r[6]).get("truncated_from_tokens") for r in got["prompts"] if r[6])
    assert not any((tmp_path / "dist.duckdb.shards").rglob("*.shard")), "merged shards are deleted"
    # Re-running the same command finds the run complete and adds nothing.
    again = distributed(db, prompts, tiny_assets, pool)
    assert again.resumed and again.n_swept == 0
    assert_same_database(content(db), reference)


@requires_ray
def test_worker_killed_with_sigkill_is_replaced_and_nothing_is_lost(tiny_assets, prompts, reference, pool, tmp_path):
    killed = []

    def on_event(kind, value):
        if kind == "shard" and not killed:  # the other worker is busy with its next group
            victim = pool.pids()[1]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    before = pool.restarts
    db = tmp_path / "dist.duckdb"
    distributed(db, prompts, tiny_assets, pool, on_event=on_event, commit_every=100)
    assert killed and pool.restarts == before + 1
    assert_same_database(content(db), reference)


def _merged_prompts(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT count(*) FROM prompts").fetchone()[0]
    finally:
        con.close()


@requires_ray
@pytest.mark.parametrize(
    "crash_at",
    [
        "merge_in_transaction:2",  # mid-transaction of the 2nd merge: that batch must vanish whole
        pytest.param("merge_committed:1", marks=pytest.mark.slow),  # committed, shards not yet deleted
    ],
)
def test_merger_killed_with_sigkill_then_rerun_gives_the_same_database(
    tiny_assets, prompts, reference, pool, ray_address, tmp_path, crash_at, monkeypatch
):
    from featuregraph.query.reader import open_reader
    from featuregraph.store.snapshot import snapshot_path

    db = tmp_path / "dist.duckdb"
    run = subprocess.run(_cli(tiny_assets, prompts, db, "--workers", "1", "--ray-address", ray_address),
                         env=env(FEATUREGRAPH_CRASH_AT=crash_at), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
    assert 0 < _merged_prompts(db) < N_SWEPT, "the kill must land mid-run"
    # The killed merger's snapshot (published at its start) stays, and a copy cut short by a kill
    # would too; a reader takes the database itself, not a snapshot whose writer is gone.
    assert snapshot_path(db).exists()
    cut_short = Path(f"{snapshot_path(db)}.999999.tmp")
    cut_short.write_bytes(b"part of a copy")
    monkeypatch.setenv("FEATUREGRAPH_LOCK_WAIT", "0")
    with open_reader(db) as r:
        assert r.snapshot_time is None and r.fetchone("SELECT count(*) FROM prompts")[0] == _merged_prompts(db)
    # Re-running the same command (here in-process, with warm workers) resumes and completes.
    summary = distributed(db, prompts, tiny_assets, pool)
    assert summary.resumed
    assert_same_database(content(db), reference)
    assert not list((tmp_path / "dist.duckdb.shards").rglob("*.shard"))
    assert not snapshot_path(db).exists() and not cut_short.exists()


@requires_ray
@pytest.mark.slow
def test_whole_job_killed_with_sigkill_then_rerun_gives_the_same_database(tiny_assets, prompts, reference, tmp_path):
    """The CLI starts its own local Ray cluster; the whole process group (driver, Ray, workers) is killed."""
    db = tmp_path / "dist.duckdb"
    proc = subprocess.Popen(_cli(tiny_assets, prompts, db, "--workers", "2"), env=env(), stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    merges = 0
    for line in proc.stderr:
        if "merged " in line:
            merges += 1
            if merges == 2:
                os.killpg(proc.pid, signal.SIGKILL)
                break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 0 < _merged_prompts(db) < N_SWEPT
    done = subprocess.run(_cli(tiny_assets, prompts, db, "--workers", "2"), env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed" in done.stdout
    assert_same_database(content(db), reference)


READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from featuregraph.store.info import database_info
    db, stop, log = Path(sys.argv[1]), Path(sys.argv[2]), open(sys.argv[3], "a", buffering=1)
    while not db.exists():
        time.sleep(0.05)
    log.write(json.dumps({"ready": True}) + "\\n")
    while not stop.exists():
        try:
            info = database_info(db)
            runs = info["runs"]
            log.write(json.dumps({"done": runs[0]["done"] if runs else 0}) + "\\n")
        except Exception as exc:
            log.write(json.dumps({"error": str(exc)}) + "\\n")
        time.sleep(0.05)
    """
)


@requires_ray
def test_readers_work_while_a_distributed_ingest_runs(tiny_assets, prompts, reference, pool, tmp_path):
    db, stop, log = tmp_path / "dist.duckdb", tmp_path / "stop", tmp_path / "reads.jsonl"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop), str(log)], env=env())

    def reads() -> list[dict]:
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    def on_event(kind, value):
        # After a merge the merger holds no lock: wait until the reader has seen part of the run.
        if kind == "merged" and not any(0 < r.get("done", 0) < N_SWEPT for r in reads()):
            deadline = time.monotonic() + 60
            while not any(0 < r.get("done", 0) < N_SWEPT for r in reads()) and time.monotonic() < deadline:
                time.sleep(0.05)

    try:
        # Shards shipped through Ray, as from workers on other machines.
        distributed(db, prompts, tiny_assets, pool, on_event=on_event, commit_every=1, ship_shards=True)
        time.sleep(0.3)
    finally:
        stop.touch()
        reader.wait(timeout=60)
    seen = reads()
    assert not [r for r in seen if "error" in r], seen
    assert any(0 < r.get("done", 0) < N_SWEPT for r in seen), "a read must land mid-ingest"
    assert_same_database(content(db), reference)


# Another process's reader, on request: featuregraph's reader (the dashboard's and the query API's
# sandboxed open) with no lock wait at all, so a reader that had to wait fails at once.
SNAPSHOT_READER = textwrap.dedent(
    """
    import json, sys, time
    from featuregraph.query.reader import open_reader
    print("ready", flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        try:
            with open_reader(sys.argv[1]) as db:
                out = {"took": time.perf_counter() - start, "snapshot": db.snapshot_time is not None,
                       "prompts": [r[0] for r in db.fetchall("SELECT prompt_id FROM prompts ORDER BY 1")],
                       "edges": db.fetchall("SELECT prompt_id, up_layer, up_feature, down_layer, down_feature, weight FROM edges ORDER BY ALL"),
                       "summary": db.fetchall("SELECT up_layer, up_feature, down_layer, down_feature, sign, n FROM edge_summary ORDER BY ALL")}
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)
    """
)


@requires_ray
def test_a_reader_during_a_distributed_merge_reads_its_snapshot_at_once(tiny_assets, prompts, reference, pool, tmp_path, monkeypatch):
    from featuregraph.ingest import shards
    from featuregraph.store import snapshot
    from featuregraph.store.writer import writer_file

    monkeypatch.setenv(snapshot.SNAPSHOT_ENV, "0")  # a snapshot after every merge,
    monkeypatch.setattr(snapshot, "COPY_SHARE", 1e9)  # whatever the copies cost
    db = tmp_path / "dist.duckdb"
    reader = subprocess.Popen([sys.executable, "-c", SNAPSHOT_READER, str(db)], env=env(FEATUREGRAPH_LOCK_WAIT="0"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert reader.stdout.readline().strip() == "ready"

    def read() -> dict:
        reader.stdin.write("read\n")
        reader.stdin.flush()
        return json.loads(reader.stdout.readline())

    merged: list[int] = []
    seen: list[dict] = []
    real_insert = shards.insert_prompt_tables

    def insert_then_read(*args, **kw):
        # Mid-merge: the merger holds the file, its transaction written but not committed.
        real_insert(*args, **kw)
        seen.append({**read(), "merged_before": sorted(merged)})

    monkeypatch.setattr(shards, "insert_prompt_tables", insert_then_read)
    try:
        distributed(db, prompts, tiny_assets, pool, on_event=lambda kind, v: merged.extend(v) if kind == "merged" else None)
        after = read()
    finally:
        reader.stdin.close()
        reader.wait(timeout=60)
    assert len(seen) >= 3, "several merges, each read during its transaction"
    for got in seen:
        assert "error" not in got, got
        assert got["snapshot"] and got["took"] < 5.0  # the snapshot, at once (a lock wait would have raised)
        # exactly the prompts of the merges committed before this one, each with all its edges
        assert got["prompts"] == got["merged_before"]
        assert [tuple(e) for e in got["edges"]] == [e for e in reference["edges"] if e[0] in set(got["prompts"])]
        # edge_summary agrees with the edges of the same snapshot (brute-force count per signed edge)
        counts = Counter((e[1], e[2], e[3], e[4], -1 if e[5] < 0 else 1) for e in got["edges"])
        assert sorted((*k, n) for k, n in counts.items()) == [tuple(r) for r in got["summary"]]
    assert seen[0]["prompts"] == [] and seen[-1]["prompts"]  # the start's snapshot, then the merges'
    # After the run: no snapshot, no writer note; the reader opens the database itself.
    assert not snapshot.snapshot_path(db).exists() and not writer_file(db).exists()
    assert not after.get("error") and not after["snapshot"] and len(after["prompts"]) == N_SWEPT
    assert_same_database(content(db), reference)


def test_a_reader_names_the_writer_when_it_cannot_get_in(tmp_path, monkeypatch):
    db = tmp_path / "fg.duckdb"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from featuregraph.store.db import open_database
        from featuregraph.store.writer import WriterNote
        db = open_database({str(db)!r})
        WriterNote({str(db)!r}, {{"what": "featuregraph ingest (single process)", "run_id": 1,
                                  "holds_lock": "for its whole run"}}).update()
        print("locked", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], env=env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        monkeypatch.setenv("FEATUREGRAPH_LOCK_WAIT", "0.3")
        res = CliRunner().invoke(app, ["info", str(db)])
    finally:
        proc.kill()
        proc.wait()
    out = res.output.strip()
    assert res.exit_code == 2 and len(out.splitlines()) == 1, out
    assert f"featuregraph ingest (single process) (pid {proc.pid} on " in out
    assert "holds the write lock for its whole run; gave up after waiting 0.3 s" in out


def test_workers_without_ray_is_a_one_line_error_and_featuregraph_imports_without_it(tiny_assets, tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["ray"] = None  # as if Ray were not installed
        import featuregraph, featuregraph.cli, ingest.run, ingest.distributed  # all import without Ray
        sys.argv = ["featuregraph", "ingest", {str(tiny_assets / "prompts.txt")!r}, "--db", {str(tmp_path / "fg.duckdb")!r},
                    "--model", {str(tiny_assets / "model")!r}, "--sae", {str(tiny_assets / "sae0")!r}, "--workers", "2"]
        featuregraph.cli.main()
        """
    )
    res = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "Error: --workers/--ray-address need Ray, which is not installed: pip install 'featuregraph[distributed]'"
    )
    assert not (tmp_path / "fg.duckdb").exists()


def test_the_merger_never_duplicates_a_prompt(tiny_assets, tmp_path):
    """Shards merged twice (a crash between commit and deletion) land once; no Ray needed."""
    from featuregraph.ingest.loading import load_all
    from featuregraph.ingest.prompts import read_prompts, tokenize_prompts
    from featuregraph.ingest.shards import complete_shards, encode_tables, merge_shards, write_shard
    from featuregraph.ingest.sweep import Sweeper
    from featuregraph.store.db import open_database
    from featuregraph.store.runs import prompt_tables

    config = tiny_config(tiny_assets, n_saes=2)
    loaded = load_all(config.model, config.saes, "cpu", "float32", None)
    inputs = tokenize_prompts(loaded.model, read_prompts(tiny_assets / "prompts.txt"), loaded.prepend_bos, "p")
    results = Sweeper(loaded.model, loaded.sites, config.sweep, loaded.prepend_bos).sweep_many(inputs)
    run_dir = tmp_path / "shards"
    run_dir.mkdir()
    files = encode_tables(prompt_tables(99, results))
    first = write_shard(run_dir, "g000000-x", "k" * 64, 0, [r.prompt_id for r in results], files)
    assert write_shard(run_dir, "g000000-x", "k" * 64, 0, [r.prompt_id for r in results], files) == first
    assert complete_shards(run_dir) == [first]
    with open_database(tmp_path / "fg.duckdb") as db:
        insert_run(db, "k" * 64, model="m", model_config={}, n_prompts=4, edge_floor=0.0001, logit_top_k=10,
                   top_next_k=10, prompts_source=None, featuregraph_version="0")  # fmt: skip
        run_id = db.fetchone("SELECT run_id FROM runs")[0]
        assert merge_shards(db, run_id, "k" * 64, [first]).prompt_ids == [0, 1, 2, 3]
        assert merge_shards(db, run_id, "k" * 64, [first]).prompt_ids == []
        assert db.fetchone("SELECT count(*), count(DISTINCT prompt_id), min(run_id) FROM prompts") == (4, 4, run_id)
        n_edges = sum(len(r.tables["edges"]["weight"]) for r in results)
        assert db.fetchone("SELECT count(*) FROM edges")[0] == n_edges
        assert db.fetchone("SELECT sum(n) FROM edge_summary")[0] == n_edges
