"""Distributed ingest on Ray: one sweep worker per GPU (or per CPU slot), one merger.

The driver (the process running ``featuregraph ingest --workers N``) does what the
single-process ingest does before sweeping (read and check the prompts, load the model on
its CPU for the tokenizer and the run's identity, find or create the run), then:

1. starts N Ray actors (:class:`SweepWorker`); each loads the model and SAEs once on its
   device and must load the same weights as the driver (checked by hash);
2. hands them the prompt groups still missing (the same groups, in the same order, as the
   single-process ingest, so every prompt gets the same numbers), at most two per worker at
   a time;
3. each worker sweeps a group and writes it as a Parquet shard (ingest/shards.py: temporary
   name, then atomic rename); a worker on another machine sends the shard's bytes back
   through Ray and the driver writes it;
4. the driver is the ONE merger: every ``commit_every`` prompts or ``commit_seconds``
   seconds it opens the database, loads the finished shards in one transaction through the
   same insert path as the single-process ingest, closes the database and deletes the
   shards. Between merges it holds no lock, so ``featuregraph info``, ``sql`` and the
   dashboard read the database itself; during a merge they read the snapshot the merger
   publishes as the single-process ingest does (store/snapshot.py: at the start, then after
   a merge at most every 30 s and 10% of the time), without waiting.

Crash safety: a worker killed mid-group loses that group only: the driver starts a new
worker and hands the group out again. A driver (merger) killed at any point, or the whole
job, leaves committed groups in the database and complete shards on disk; the same command
run again resumes the run (by its key), merges the shards that were left (skipping prompts
already stored) and sweeps the rest. The result is the database an uninterrupted run gives.

Ray is optional (``pip install 'featuregraph[distributed]'``) and imported only here, when
a distributed ingest starts.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from featuregraph.errors import DatabaseLockedError, FeaturegraphError, InputError, LoadError
from featuregraph.ingest.config import RunConfig
from featuregraph.ingest.prompts import RawPrompt
from featuregraph.ingest.pruning import prune_results
from featuregraph.ingest.run import IngestSummary, PreparedRun, _groups, open_run, prepare_run
from featuregraph.ingest.shards import (
    clean_stale,
    complete_shards,
    default_shard_root,
    discard_shards,
    driver_lock,
    encode_tables,
    merge_shards,
    run_shard_dir,
    shard_name,
    write_shard,
)
from featuregraph.ingest.sweep import PromptInput
from featuregraph.store.db import open_database
from featuregraph.store.runs import finish_run
from featuregraph.store.snapshot import SnapshotPublisher, writer_session

log = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 2
MERGE_LOCK_WAIT_S = 2.0  # during the run: a reader holding the file only delays a merge
FINAL_MERGE_LOCK_WAIT_S = 600.0


def import_ray() -> Any:
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(
            "--workers/--ray-address need Ray, which is not installed: pip install 'featuregraph[distributed]'"
        ) from None
    return ray


@dataclass(frozen=True)
class GroupJob:
    """One group of prompts for a worker to sweep into one shard."""

    index: int
    name: str
    run_id: int
    run_key: str
    shard_dir: str
    prompts: list[PromptInput]
    extras: dict[int, tuple[str | None, list[str] | None]]
    ship: bool = False  # send the shard's files back even from the driver's machine

    @property
    def prompt_ids(self) -> list[int]:
        return [p.prompt_id for p in self.prompts]


class SweepWorker:
    """A sweep worker (run as a Ray actor): loads the model and SAEs once, sweeps groups."""

    def __init__(self, config: RunConfig, threads: int, driver_node: str):
        import torch

        from featuregraph.ingest.delta import load_dtype, make_sweeper
        from featuregraph.ingest.loading import load_all

        torch.set_num_threads(threads)
        # As ingest/run.py prepare_run: make_sweeper picks delta mode or casts down.
        self.loaded = load_all(config.model, config.saes, config.device, load_dtype(config.dtype), config.prepend_bos)
        self.sweeper, _ = make_sweeper(self.loaded.model, self.loaded.sites, config.sweep, self.loaded.prepend_bos, config.dtype)
        self.same_node = _node_id() == driver_node

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": self.loaded.device,
            "model": self.loaded.model_provenance,
            "saes": [s.provenance["sha256"] for s in self.loaded.sites],
            "prepend_bos": self.loaded.prepend_bos,
        }

    def sweep_group(self, job: GroupJob) -> tuple[str, Any]:
        """Sweep one group; write its shard (``("written", path)``) or, on a machine other
        than the driver's, return the shard's files (``("files", {name: bytes})``)."""
        from featuregraph.store.runs import prompt_tables

        results = prune_results(self.sweeper.sweep_many(job.prompts), self.sweeper.config)
        for r in results:
            r.external_id, r.tags = job.extras.get(r.prompt_id, (None, None))
        files = encode_tables(prompt_tables(job.run_id, results))
        if job.ship or not self.same_node:
            return "files", files
        path = write_shard(Path(job.shard_dir), job.name, job.run_key, job.index, job.prompt_ids, files)
        return "written", str(path)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


@dataclass
class _Slot:
    actor: Any
    ready_ref: Any  # the actor's info(), answered once it has loaded the model
    generation: int = 0
    in_flight: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class WorkerPool:
    """N sweep workers for one run configuration. Reusable across ingests of that
    configuration (tests and notebooks keep one warm); :meth:`shutdown` ends them."""

    def __init__(
        self,
        config: RunConfig,
        workers: int | None = None,
        cpus_per_worker: float = 1,
        gpus_per_worker: float | None = None,
    ):
        ray = import_ray()
        if not ray.is_initialized():
            raise InputError("start Ray (ray.init) before creating a WorkerPool")
        self.config = config
        cluster = ray.cluster_resources()
        gpus = cluster.get("GPU", 0)
        if gpus_per_worker is None:
            gpus_per_worker = 1 if gpus > 0 and config.device != "cpu" else 0
        if config.device.startswith("cuda") and gpus == 0:
            raise InputError("--device cuda, but the Ray cluster has no GPU; use --device cpu or auto")
        if workers is None:
            workers = int(gpus // gpus_per_worker) if gpus_per_worker else int(cluster.get("CPU", 1) // cpus_per_worker)
        if workers < 1:
            raise InputError(f"--workers must be >= 1, got {workers}")
        self.n = workers
        self.threads = max(1, int(cpus_per_worker))
        self.options = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker, "max_restarts": 0}
        self._remote = ray.remote(SweepWorker)
        self.driver_node = ray.get_runtime_context().get_node_id()
        self.slots = [self._start() for _ in range(workers)]
        self.restarts = 0

    def _start(self, generation: int = 0) -> _Slot:
        actor = self._remote.options(**self.options).remote(self.config, self.threads, self.driver_node)
        return _Slot(actor, actor.info.remote(), generation)

    def _get_info(self, i: int, timeout_s: float | None = None) -> None:
        ray = import_ray()
        slot = self.slots[i]
        try:
            slot.info = ray.get(slot.ready_ref, timeout=timeout_s)
        except ray.exceptions.RayActorError as exc:
            raise LoadError(f"sweep worker {i} failed to start: {_cause(exc)}") from None
        log.info("worker %d: pid %d on %s (%s)", i, slot.info["pid"], slot.info["host"], slot.info["device"])

    def ready(self, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Wait until every worker has loaded the model; their info (pid, host, device, hashes)."""
        for i, slot in enumerate(self.slots):
            if not slot.info:
                self._get_info(i, timeout_s)
        return [s.info for s in self.slots]

    def is_ready(self, i: int) -> bool:
        """Whether slot ``i``'s worker has loaded the model (a replacement may still be loading)."""
        slot = self.slots[i]
        if not slot.info:
            ray = import_ray()
            done, _ = ray.wait([slot.ready_ref], timeout=0)
            if not done:
                return False
            self._get_info(i)
        return True

    def replace(self, i: int) -> None:
        """Start a new worker in slot ``i`` (its actor died); it gets work once it has loaded."""
        ray = import_ray()
        try:
            ray.kill(self.slots[i].actor, no_restart=True)
        except Exception:  # already gone
            pass
        self.restarts += 1
        self.slots[i] = self._start(self.slots[i].generation + 1)
        log.warning("worker %d died; started a new one (%d restarts so far)", i, self.restarts)

    def pids(self) -> list[int]:
        return [s.info.get("pid") for s in self.slots]

    def shutdown(self) -> None:
        ray = import_ray()
        for slot in self.slots:
            try:
                ray.kill(slot.actor, no_restart=True)
            except Exception:
                pass
        self.slots = []


def _cause(exc: BaseException) -> str:
    """The first meaningful line of a Ray error (the worker's own exception, where there is one)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, FeaturegraphError):
        return str(cause)
    for line in str(cause or exc).splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "ray::", "The actor", "(")):
            return line
    return type(exc).__name__


def _check_same_weights(prep: PreparedRun, infos: list[dict[str, Any]]) -> None:
    want = [s.provenance["sha256"] for s in prep.loaded.sites]
    for i, info in enumerate(infos):
        if info["saes"] != want or info["model"] != prep.loaded.model_provenance or info["prepend_bos"] != prep.loaded.prepend_bos:
            raise LoadError(
                f"sweep worker {i} on {info['host']} loaded other weights than the driver (model or SAE hashes "
                "differ): every machine must see the same model and SAE files"
            )


def ingest_distributed(
    db_path: str | Path,
    prompts: str | Path | list[RawPrompt],
    config: RunConfig,
    workers: int | None = None,
    ray_address: str | None = None,
    shard_dir: str | Path | None = None,
    bad_prompts: str = "record",
    too_long: str = "reject",
    commit_every: int = 64,
    commit_seconds: float = 5.0,
    prompts_per_forward: int = 8,
    cpus_per_worker: float = 1,
    gpus_per_worker: float | None = None,
    progress: bool = True,
    pool: WorkerPool | None = None,
    on_event: Callable[[str, Any], None] | None = None,
    ship_shards: bool = False,
) -> IngestSummary:
    """Sweep ``prompts`` on a Ray cluster into the database at ``db_path`` (module docstring).

    ``ray_address``: an existing cluster (``ray start --head`` on the head node); default:
    the Ray this process is connected to, or a local one started here. ``workers``: default
    one per GPU of the cluster (one per CPU without GPUs). ``pool``: warm workers to reuse.
    ``ship_shards``: workers send every shard to the driver, as workers on other machines do.
    ``on_event(kind, value)`` sees ``"workers"`` (their pids), ``"shard"`` (a shard's path)
    and ``"merged"`` (prompt ids stored by a merge).
    """
    ray = import_ray()
    started_ray = False
    if not ray.is_initialized():
        # No address (and no RAY_ADDRESS): a new local cluster, with a slot for every worker asked for.
        address = ray_address or os.environ.get("RAY_ADDRESS") or "local"
        local_cpus = max(os.cpu_count() or 1, int((workers or 1) * cpus_per_worker)) if address == "local" else None
        try:
            ray.init(address=address, num_cpus=local_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(f"cannot start or reach the Ray cluster {address!r}: {str(exc).splitlines()[0]}") from None
        started_ray = True
    own_pool = pool is None
    try:
        if pool is None:
            pool = WorkerPool(config, workers, cpus_per_worker, gpus_per_worker)  # loads while the driver prepares
        elif pool.config != config:
            raise InputError("the worker pool was started for another configuration")
        # The driver only needs the tokenizer and the run's identity: it loads on its CPU.
        prep = prepare_run(prompts, config, bad_prompts, too_long, device="cpu")
        infos = pool.ready()
        _check_same_weights(prep, infos)
        if on_event:
            on_event("workers", pool.pids())
        run_dir = run_shard_dir(shard_dir or default_shard_root(db_path), prep.key)
        what = {"what": f"featuregraph ingest --workers {pool.n} (distributed)", "n_prompts": len(prep.prompts.inputs),
                "holds_lock": "only while merging a batch of shards"}  # fmt: skip
        with driver_lock(run_dir), writer_session(db_path, what) as snapshots:
            return _drive(db_path, prep, config, pool, run_dir, infos[0]["device"], commit_every, commit_seconds,
                          prompts_per_forward, progress, on_event, ship_shards, snapshots)  # fmt: skip
    finally:
        if own_pool and pool is not None:
            pool.shutdown()
        if started_ray:
            ray.shutdown()


def _drive(
    db_path, prep: PreparedRun, config: RunConfig, pool: WorkerPool, run_dir: Path, device: str,
    commit_every: int, commit_seconds: float, prompts_per_forward: int, progress: bool, on_event, ship: bool,
    snapshots: SnapshotPublisher,
) -> IngestSummary:  # fmt: skip
    ray = import_ray()
    inputs = prep.prompts.inputs
    clean_stale(run_dir)  # no worker of this run is writing yet: any temporary folder is a leftover
    with open_database(db_path, wait_s=FINAL_MERGE_LOCK_WAIT_S) as db:
        run_id, done, resumed = open_run(db, prep, config, device)
        snapshots.start(db)  # readers read the snapshots while a merge holds the file
        leftovers = complete_shards(run_dir)
        if leftovers:  # an earlier attempt's shards: they hold valid results of this very run
            merged = merge_shards(db, run_id, prep.key, leftovers)
            snapshots.after_commit(db)
            done.update(merged.prompt_ids)
            log.info("merged %d shards left by an earlier attempt: prompts %s", len(leftovers), merged.prompt_ids)
        discard_shards(leftovers)
    snapshots.announce(run_id=run_id, merged=len(done))

    jobs: deque[GroupJob] = deque()
    for index, group in enumerate(_groups(inputs, prompts_per_forward)):
        group = [p for p in group if p.prompt_id not in done]
        if group:
            ids = [p.prompt_id for p in group]
            extras = {i: prep.prompts.extras.get(i, (None, None)) for i in ids}
            jobs.append(GroupJob(index, shard_name(index, ids), run_id, prep.key, str(run_dir), group, extras, ship))
    n_todo = sum(len(j.prompts) for j in jobs)
    log.info("run %d: %d prompts, %d to sweep on %d workers", run_id, len(inputs), n_todo, pool.n)

    start = time.perf_counter()
    in_flight: dict[Any, tuple[int, int, GroupJob]] = {}  # ref -> (slot, generation, job)
    pending: list[tuple[Path, int]] = []  # finished shards not merged yet, with their prompt counts
    last_merge = time.monotonic()
    max_restarts = max(3, 2 * pool.n)
    merged_total = len(done)

    def merge(wait_s: float) -> bool:
        nonlocal pending, last_merge, merged_total
        if not pending:
            return True
        shards = [p for p, _ in pending]
        try:
            db = open_database(db_path, wait_s=wait_s)
        except DatabaseLockedError as exc:
            if wait_s < FINAL_MERGE_LOCK_WAIT_S:
                log.info("merge postponed: %s", exc)
                return False
            raise
        try:
            result = merge_shards(db, run_id, prep.key, shards)
            snapshots.after_commit(db)
        finally:
            db.close()
        discard_shards(shards)
        merged_total += len(result.prompt_ids)
        snapshots.announce(merged=merged_total)
        log.info("merged %d shards: prompts %s", len(shards), result.prompt_ids)
        bar.update(len(result.prompt_ids))
        if on_event:
            on_event("merged", result.prompt_ids)
        pending = []
        last_merge = time.monotonic()
        return True

    status = "failed"
    try:
        with tqdm(total=n_todo, unit="prompt", disable=not progress, desc=f"run {run_id}") as bar:
            while jobs or in_flight:
                for i, slot in enumerate(pool.slots):
                    if not (jobs and slot.in_flight < IN_FLIGHT_PER_WORKER and pool.is_ready(i)):
                        continue
                    _check_same_weights(prep, [slot.info])
                    while jobs and slot.in_flight < IN_FLIGHT_PER_WORKER:
                        job = jobs.popleft()
                        in_flight[slot.actor.sweep_group.remote(job)] = (i, slot.generation, job)
                        slot.in_flight += 1
                if not in_flight:
                    time.sleep(0.2)  # every worker is (re)loading
                    continue
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for ref in ready:
                    i, generation, job = in_flight.pop(ref)
                    slot = pool.slots[i]
                    if slot.generation == generation:
                        slot.in_flight -= 1
                    try:
                        kind, value = ray.get(ref)
                    except ray.exceptions.RayActorError:
                        jobs.appendleft(job)  # swept again by a new worker: the same rows
                        if slot.generation == generation:
                            if pool.restarts >= max_restarts:
                                raise LoadError(f"sweep workers died {pool.restarts + 1} times; giving up (see the Ray logs)") from None
                            pool.replace(i)
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        raise LoadError(f"a sweep worker failed on prompts {job.prompt_ids}: {_cause(exc)}") from None
                    path = Path(value) if kind == "written" else write_shard(run_dir, job.name, prep.key, job.index, job.prompt_ids, value)
                    pending.append((path, len(job.prompts)))
                    if on_event:
                        on_event("shard", path)
                n_pending = sum(n for _, n in pending)
                if n_pending >= commit_every or (pending and time.monotonic() - last_merge >= commit_seconds):
                    merge(MERGE_LOCK_WAIT_S)
            merge(FINAL_MERGE_LOCK_WAIT_S)
        status = "complete"
    finally:
        try:
            with open_database(db_path, wait_s=FINAL_MERGE_LOCK_WAIT_S if status == "complete" else 5.0) as db:
                finish_run(db, run_id, status)
        except FeaturegraphError:
            if status == "complete":
                raise
            # A failed run stays 'running' in the database; re-running the command resumes it.
    return IngestSummary(
        run_id, str(db_path), len(inputs), n_todo, time.perf_counter() - start, resumed, len(prep.prompts.errors)
    )


__all__ = ["ingest_distributed", "WorkerPool", "SweepWorker", "import_ray"]
