"""``featuregraph demo``: sweep the bundled model's task prompts into a local database.

Safe to run twice: the ingest resumes (nothing is swept again) and the noise baseline is
only computed when the run has none yet.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from featuregraph.demo import (
    HELDOUT_FILLER,
    HELDOUT_FILLER_WORDS,
    HELDOUT_PATH,
    MODEL_DIR,
    NOISE_CORPUS_PATH,
    PROMPTS_PATH,
    attn_sae_dirs,
    sae_dirs,
)
from featuregraph.errors import InputError

log = logging.getLogger(__name__)

HAS_NOISE = "SELECT count(*) FROM experiments WHERE run_id = ? AND kind = 'noise' AND status = 'complete'"
LATEST_NOISE = "SELECT max(experiment_id) FROM noise_experiment_of(NULL) WHERE run_id = ?"
HELDOUT_TAG = "filler-heldout"
IOI_TAG = "ioi"
HAS_DFA = "SELECT count(*) FROM dfa_features WHERE run_id = ?"
PROMPTS_PER_TAG = "SELECT tag, count(*) FROM prompts WHERE run_id = ? GROUP BY tag ORDER BY tag"
EDGE_COUNT = "SELECT count(*) FROM edges WHERE run_id = ?"
# A validation the demo already ran (same spec, so same path and held-out file), newest first.
SAME_VALIDATION = (
    "SELECT experiment_id, summary FROM experiments WHERE run_id = ? AND kind = 'validation' "
    "AND status = 'complete' AND spec = ? ORDER BY experiment_id DESC"
)


@dataclass(frozen=True)
class TaskPath:
    """A recurring 2-edge path and, per task tag, the number of that task's prompts containing it
    (same signs as in the task where it was found)."""

    path: str
    signs: tuple[int, ...]
    support: dict[str, int]


@dataclass(frozen=True)
class DemoSummary:
    db_path: str
    run_id: int
    prompts_per_tag: dict[str, int]
    edges: int
    noise_experiment: int | None  # None: the run already had one
    #: tag -> its most task-specific recurring paths (see :func:`task_paths`).
    paths_per_tag: dict[str, list[TaskPath]]
    #: per tag and kind of effect: stored, with a null, share with p < 0.01 and < 0.001, median p
    significance: list[dict]
    #: per task with a path: its top path validated on the held-out prompts (see :func:`validate_top_paths`)
    validations: list[PathValidation] = field(default_factory=list)
    #: per tag: kinds of each prompt's strongest edges (see :func:`demo.edge_kinds.edge_kinds`)
    edge_kinds: list[dict] = field(default_factory=list)
    #: the mixed-site run (residual + attention-output SAEs) over the IOI prompts, with DFA
    attention_run: int | None = None
    #: its attention features that lower the IOI answer most (:func:`demo.attention_report.ioi_attention_report`)
    attention_report: list[dict] = field(default_factory=list)


#: How many of each prompt's strongest edges the edge-kind summary looks at.
STRONGEST_EDGES = 30

#: How many of each task's most specific paths are validated (each against its own matched control).
#: Trying several makes "at least one meets the target" easier to reach by chance: the CLI says how many.
VALIDATED_PATHS = 3

#: Target of a validated path: its median answer log-prob change at least this many times the
#: matched control's (both negative), with its bootstrap interval below the control's median.
EFFECT_FACTOR = 3.0


@dataclass(frozen=True)
class PathValidation:
    """A task's top path ablated on that task's held-out prompts next to a matched control."""

    tag: str
    path: str
    experiment_id: int
    prompts: int
    #: ``paired_summary`` of the answer log-prob change (path, control, difference), or None when
    #: no prompt names an answer.
    dlogp: dict | None
    warnings: list[str]
    #: 1 for the task's most specific path, 2 for the next...
    rank: int = 1

    @property
    def target_met(self) -> bool:
        """Path median <= EFFECT_FACTOR x control median (a drop), and the path's 95% interval
        lies below the control's median."""
        if self.dlogp is None:
            return False
        path, control = self.dlogp["path"], self.dlogp["control"]["median"]
        return path["median"] < 0 and path["median"] <= EFFECT_FACTOR * min(control, 0.0) and path["ci95"][1] < control


def validate_top_paths(
    db_path: str | Path, run_id: int, paths: dict[str, list[TaskPath]], per_tag: int | None
) -> list[PathValidation]:
    """Validate each task's top :data:`VALIDATED_PATHS` paths on that task's prompts of ``demo/heldout.jsonl`` (the first
    ``per_tag``, or all) against the matched control (``featuregraph validate --control matched``).
    The held-out prompts were never swept, so the path was not selected on them. A validation
    already stored for the same path and prompts is read back, not run again."""
    from featuregraph.ingest.experiments import run_validation
    from featuregraph.ingest.prompts import read_prompts
    from featuregraph.ingest.validation import ValidationSpec
    from featuregraph.query.api import parse_path

    heldout = read_prompts(HELDOUT_PATH)
    out = []
    for tag, found in paths.items():
        prompts = _subset([p for p in heldout if p.tag == tag], per_tag)
        if not prompts:
            continue
        for rank, path in enumerate(found[:VALIDATED_PATHS], 1):
            features = tuple(str(n) for n in parse_path(path.path))
            spec = ValidationSpec(features, str(HELDOUT_PATH), control="matched")
            done = _stored_validation(db_path, run_id, spec, len(prompts))
            experiment_id, s = done or run_validation(db_path, spec, prompts=prompts, run_id=run_id)
            out.append(
                PathValidation(tag, path.path, experiment_id, s["prompts"], s.get("answer_dlogp"), s["warnings"], rank)
            )
    return out


def task_paths(db, run_id: int, tags: dict[str, int], top: int = 3) -> dict[str, list[TaskPath]]:
    """Per task, the recurring 2-edge paths that are most specific to it.

    ``tag_specific_paths`` (docs/sql.md) over the chains found in at least a tenth of the task's
    prompts, counting only edges of at least a tenth of their ablation's largest |weight|
    (:data:`query.api.RECOMMENDED_MIN_REL_WEIGHT`, as the CLI and the dashboard do), ranked by
    ``support_in_task / n_task - max over other tasks of support / n_other``. Paths that are at
    least as common elsewhere are dropped, so a task may get fewer than ``top``.
    """
    from featuregraph.query.api import RECOMMENDED_MIN_REL_WEIGHT, tag_specific_paths

    out: dict[str, list[TaskPath]] = {}
    for tag in tags:
        # A path in under a tenth of the task's prompts does not recur in any useful sense, and
        # a low bar makes the candidate search explode on a few hundred prompts.
        found = tag_specific_paths(
            db, tag, n_edges=2, min_support=max(2, tags[tag] // 10), run=run_id,
            min_rel_weight=RECOMMENDED_MIN_REL_WEIGHT, top=top,
        )  # fmt: skip
        out[tag] = []
        for row in found.iter_rows(named=True):
            if row["specificity"] > 0:
                support = {s["tag"]: int(s["support"]) for s in row["tag_supports"]}
                out[tag].append(TaskPath(str(row["path"]), tuple(row["signs"]), {t: support.get(t, 0) for t in tags}))
    return out


def heldout_filler(corpus) -> list:
    """The last ``HELDOUT_FILLER`` filler records, cut to their first words, as prompts tagged
    ``filler-heldout``: unrelated text that the noise baseline never samples (a prompt that
    begins a corpus text excludes that text), so its effects must look like noise."""
    return [
        replace(raw, text=" ".join(raw.text.split()[:HELDOUT_FILLER_WORDS]), tag=HELDOUT_TAG, metadata=None)
        for raw in corpus[-HELDOUT_FILLER:]
    ]


def _stored_validation(db_path, run_id: int, spec, n_prompts: int) -> tuple[int, dict] | None:
    from featuregraph.store.db import open_database

    with open_database(db_path, read_only=True) as db:
        rows = db.fetchall(SAME_VALIDATION, [run_id, json.dumps(asdict(spec), sort_keys=True)])
    for experiment_id, summary in rows:
        summary = json.loads(summary) if isinstance(summary, str) else summary
        if summary.get("prompts") == n_prompts:
            return int(experiment_id), summary
    return None


def _subset(prompts, per_tag: int | None):
    if per_tag is None:
        return prompts
    seen: Counter = Counter()
    out = []
    for p in prompts:
        if seen[p.tag] < per_tag:
            seen[p.tag] += 1
            out.append(p)
    return out


def run_demo(
    db_path: str | Path,
    per_tag: int | None = None,
    noise_contexts: int = 100,
    device: str = "auto",
    progress: bool = True,
    say: Callable[[str], None] = log.info,
) -> DemoSummary:
    """Ingest the bundled prompts (``per_tag`` of each task, or all) with the bundled model and
    SAEs, add a noise baseline from the bundled filler corpus, summarise what landed, and validate
    each task's top path on its held-out prompts (:func:`validate_top_paths`)."""
    from featuregraph.ingest.config import ModelSpec, RunConfig, SaeSpec
    from featuregraph.ingest.experiments import run_noise
    from featuregraph.ingest.noise import NoiseSpec
    from featuregraph.ingest.prompts import read_prompts
    from featuregraph.ingest.run import ingest
    from featuregraph.store.db import open_database

    if per_tag is not None and per_tag < 0:
        raise InputError(f"--per-tag must be >= 0 (0: all prompts), got {per_tag}")
    if not MODEL_DIR.is_dir():
        raise InputError(f"the bundled demo model is missing at {MODEL_DIR}; regenerate it with `python -m featuregraph.demo.train`")
    prompts = _subset(read_prompts(PROMPTS_PATH), per_tag)
    prompts += _subset(heldout_filler(read_prompts(NOISE_CORPUS_PATH)), per_tag)
    config = RunConfig(
        model=ModelSpec(str(MODEL_DIR)),
        saes=tuple(SaeSpec(path=str(p)) for p in sae_dirs()),
        device=device,
    )
    say(f"sweeping {len(prompts)} prompts with the bundled model ({len(config.saes)} SAEs) into {db_path}")
    summary = ingest(db_path, prompts, config, progress=progress)
    run_id = summary.run_id

    with open_database(db_path, read_only=True) as db:
        has_noise = db.fetchone(HAS_NOISE, [run_id])[0] > 0
    experiment_id = None
    if not has_noise:
        say(f"noise baseline: ablating the run's features in {noise_contexts} filler contexts")
        spec = NoiseSpec(str(NOISE_CORPUS_PATH), n_contexts=noise_contexts, context_tokens=24)
        experiment_id, _ = run_noise(db_path, spec, run_id=run_id, device=device, progress=progress)

    from featuregraph.demo.edge_kinds import edge_kinds
    from featuregraph.query.noise import significance_by_tag

    with open_database(db_path, read_only=True) as db:
        all_tags = {t: n for t, n in db.fetchall(PROMPTS_PER_TAG, [run_id]) if t}
        tasks = {t: n for t, n in all_tags.items() if t != HELDOUT_TAG}
        edges = int(db.fetchone(EDGE_COUNT, [run_id])[0])
        noise = db.fetchone(LATEST_NOISE, [run_id])[0]
        significance = significance_by_tag(db, run_id, noise).to_dicts() if noise is not None else []
        kinds = edge_kinds(db, run_id, STRONGEST_EDGES)
        say("looking for the recurring paths specific to each task")
        paths = task_paths(db, run_id, tasks)
    say("validating each task's top path on its held-out prompts against a matched control")
    validations = validate_top_paths(db_path, run_id, paths, per_tag)
    attention_run, report = attention_stage(db_path, prompts, config, device, progress, say)
    return DemoSummary(
        str(db_path), run_id, all_tags, edges, experiment_id, paths, significance, validations, kinds,
        attention_run, report,
    )  # fmt: skip


def attention_stage(db_path, prompts, config, device: str, progress: bool, say) -> tuple[int | None, list[dict]]:
    """Sweep the IOI prompts again with the residual and the attention-output SAEs (a mixed-site
    run: edges to the next site of each kind), decompose its attention features at the read
    position by head and source position (DFA), and report which attention features move the
    indirect object's name. A separate run, because noise, validation and curve experiments
    take residual-only runs. Skipped when the assets hold no attention SAEs."""
    from featuregraph.demo.attention_report import ioi_attention_report
    from featuregraph.ingest.config import SaeSpec
    from featuregraph.ingest.dfa_run import run_dfa
    from featuregraph.ingest.run import ingest
    from featuregraph.store.db import open_database

    attn = attn_sae_dirs()
    ioi = [p for p in prompts if p.tag == IOI_TAG]
    if not attn or not ioi:
        return None, []
    mixed = replace(config, saes=config.saes + tuple(SaeSpec(path=str(p)) for p in attn))
    say(f"attention-output SAEs: sweeping the {len(ioi)} IOI prompts with {len(mixed.saes)} SAEs (residual + hook_z)")
    run_id = ingest(db_path, ioi, mixed, progress=progress).run_id
    with open_database(db_path, read_only=True) as db:
        has_dfa = db.fetchone(HAS_DFA, [run_id])[0] > 0
    if not has_dfa:
        say("direct feature attribution of the attention features by head and source position")
        run_dfa(db_path, run_id, device=device, progress=progress)
    with open_database(db_path, read_only=True) as db:
        return run_id, ioi_attention_report(db, run_id, IOI_TAG)
