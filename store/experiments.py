"""Experiments on a run (noise baselines, path validation, response curves): reading what they
need from the run, and writing their results.

An experiment lands in one transaction: its ``experiments`` row (with spec and summary) and all
its result rows together, so a crash never leaves half an experiment.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from featuregraph.store.db import Database
from featuregraph.store.runs import now
from featuregraph.store.tables import arrow_table

INSERT_EXPERIMENT = """
INSERT INTO experiments (run_id, kind, status, spec, summary, device, featuregraph_version, torch_version,
                         started_at, finished_at)
VALUES ($run_id, $kind, 'complete', $spec, $summary, $device, $featuregraph_version, $torch_version,
        $started_at, $finished_at)
RETURNING experiment_id
"""
EDGE_FEATURES = """
SELECT DISTINCT layer, feature FROM (
    SELECT up_layer AS layer, up_feature AS feature FROM edges WHERE run_id = $run_id
    UNION ALL
    SELECT down_layer, down_feature FROM edges WHERE run_id = $run_id
) ORDER BY layer, feature
"""
EDGE_TARGETS = """
SELECT DISTINCT up_layer, up_feature, down_layer, down_feature FROM edges WHERE run_id = ?
ORDER BY ALL
"""
LOGIT_TARGETS = "SELECT DISTINCT layer, feature, token_id FROM logit_effects WHERE run_id = ? ORDER BY ALL"
# A feature's typical in-context activation: the median, over the prompts where it was ablated,
# of its largest activation at an ablated position.
TYPICAL_ACTIVATIONS = """
SELECT layer, feature, median(max_activation) FROM ablations WHERE run_id = ? GROUP BY ALL
"""
RUN_PROMPT_TEXTS = "SELECT text FROM prompts WHERE run_id = ?"


def edge_features(db: Database, run_id: int) -> list[tuple[int, int]]:
    """Every feature that appears in the run's edges, upstream or downstream."""
    return [(int(a), int(b)) for a, b in db.fetchall(EDGE_FEATURES, {"run_id": run_id})]


def edge_targets(db: Database, run_id: int) -> np.ndarray:
    """Distinct (up_layer, up_feature, down_layer, down_feature) of the run's edges, [n, 4]."""
    rows = db.fetchall(EDGE_TARGETS, [run_id])
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def logit_targets(db: Database, run_id: int) -> np.ndarray:
    """Distinct (layer, feature, token_id) of the run's logit effects, [n, 3]."""
    rows = db.fetchall(LOGIT_TARGETS, [run_id])
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def typical_activations(db: Database, run_id: int) -> dict[tuple[int, int], float]:
    """(layer, feature) -> median of its largest activation over the prompts it was ablated in."""
    return {(int(a), int(b)): float(c) for a, b, c in db.fetchall(TYPICAL_ACTIVATIONS, [run_id])}


def run_prompt_texts(db: Database, run_id: int) -> frozenset[str]:
    """The texts of a run's prompts (a noise baseline never samples them)."""
    return frozenset(r[0] for r in db.fetchall(RUN_PROMPT_TEXTS, [run_id]))


def write_experiment(
    db: Database,
    run_id: int,
    kind: str,
    spec: dict[str, Any],
    summary: dict[str, Any],
    provenance: dict[str, Any],
    tables: dict[str, dict[str, Any]],
) -> int:
    """Insert an experiment and its result tables (name -> columns, without the id columns)
    in one transaction; return the experiment_id."""
    with db.transaction():
        experiment_id = int(
            db.fetchone(
                INSERT_EXPERIMENT,
                {
                    "run_id": run_id,
                    "kind": kind,
                    "spec": json.dumps(spec, sort_keys=True),
                    "summary": json.dumps(summary, sort_keys=True),
                    "finished_at": now(),
                    **provenance,
                },
            )[0]
        )
        for name, cols in tables.items():
            # Lists: None -> NULL; numpy float arrays: NaN -> NULL; types from the table spec.
            db.insert_arrow(name, arrow_table(name, cols, run_id=run_id, experiment_id=experiment_id))
    return experiment_id
