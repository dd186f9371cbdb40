"""Ingest-time pruning (ingest/pruning.py) against brute force, and its place in the run config."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from featuregraph.errors import InputError
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.pruning import prune_mask, prune_results
from featuregraph.store.models import PROMPT_TABLES
from featuregraph.store.run_config import CONFIG_VERSION, upgrade_config


def random_edges(seed: int, n: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = set()
    while len(rows) < n:
        ul = int(rng.integers(0, 4))
        rows.add((ul, int(rng.integers(0, 4)), ul + int(rng.integers(1, 3)), int(rng.integers(0, 4))))
    rows = sorted(rows)
    weights = rng.permutation(np.arange(1, n + 1)) * rng.choice([-1, 1], n) / 64  # distinct |weight|
    spec = PROMPT_TABLES["edges"]
    cols = list(zip(*rows))
    return {
        "up_layer": np.array(cols[0], spec["up_layer"]), "up_feature": np.array(cols[1], spec["up_feature"]),
        "down_layer": np.array(cols[2], spec["down_layer"]), "down_feature": np.array(cols[3], spec["down_feature"]),
        "weight": weights.astype(spec["weight"]),
    }  # fmt: skip


def brute_top_k(edges, k: int) -> set[int]:
    by_ablation: dict = {}
    for i in range(len(edges["weight"])):
        by_ablation.setdefault((edges["up_layer"][i], edges["up_feature"][i]), []).append(i)
    return {i for rows in by_ablation.values() for i in sorted(rows, key=lambda i: -abs(edges["weight"][i]))[:k]}


def brute_long_chains(edges, rows: set[int], min_edges: int) -> set[int]:
    """Every chain of masked edges, enumerated: keep the edges of those with >= min_edges edges."""
    node = lambda i, end: (edges[f"{end}_layer"][i], edges[f"{end}_feature"][i])  # noqa: E731
    keep = set()

    def walk(chain: list[int]) -> None:
        if len(chain) >= min_edges:
            keep.update(chain)
        for j in rows:
            if node(j, "up") == node(chain[-1], "down"):
                walk(chain + [j])

    for i in rows:
        walk([i])
    return keep


@pytest.mark.parametrize("seed, k, min_edges", itertools.product(range(4), (1, 3), (1, 2, 3)))
def test_paths_pruning_equals_brute_force(seed, k, min_edges):
    edges = random_edges(seed)
    sweep = SweepConfig(prune="paths", prune_top_k=k, prune_min_path_edges=min_edges)
    got = set(np.flatnonzero(prune_mask(edges, sweep)).tolist())
    assert got == brute_long_chains(edges, brute_top_k(edges, k), min_edges)


@pytest.mark.parametrize("floor", (0.0, 0.3, 0.9, 1.0))
def test_relative_pruning_keeps_edges_near_their_ablations_largest(floor):
    edges = random_edges(7)
    largest: dict = {}
    for i, w in enumerate(edges["weight"]):
        key = (edges["up_layer"][i], edges["up_feature"][i])
        largest[key] = max(largest.get(key, 0.0), abs(float(w)))
    want = {i for i, w in enumerate(edges["weight"])
            if abs(float(w)) >= floor * largest[(edges["up_layer"][i], edges["up_feature"][i])]}  # fmt: skip
    got = set(np.flatnonzero(prune_mask(edges, SweepConfig(prune="relative", prune_rel_floor=floor))).tolist())
    assert got == want
    assert len(got) == len(edges["weight"]) if floor == 0 else len(got) < len(edges["weight"])


def test_no_pruning_is_the_default_and_changes_nothing():
    from query_graphs import HAND_GRAPH, prompt_result

    results = [prompt_result(p, e) for p, (_, e) in HAND_GRAPH.items()]
    assert SweepConfig().prune == "none"
    assert prune_results(results, SweepConfig()) == results
    pruned = prune_results(results, SweepConfig(prune="paths", prune_top_k=1, prune_min_path_edges=3))
    assert [len(r.tables["edges"]["weight"]) for r in pruned] < [len(r.tables["edges"]["weight"]) for r in results]
    assert [r.tables["ablations"] for r in pruned] == [r.tables["ablations"] for r in results]


def test_pruning_settings_are_checked_and_part_of_the_run_identity():
    with pytest.raises(InputError, match="prune must be one of"):
        SweepConfig(prune="some")
    with pytest.raises(InputError, match="prune_rel_floor"):
        SweepConfig(prune="relative", prune_rel_floor=1.5)
    lossless = SweepConfig().semantic()
    # a lossless run has the identity it had before pruning existed (so old runs resume)
    assert not any(k.startswith("prune") for k in lossless)
    assert SweepConfig(prune_top_k=3).semantic() == lossless  # unused settings change nothing
    assert SweepConfig(prune="paths").semantic() != SweepConfig(prune="paths", prune_top_k=3).semantic()
    assert SweepConfig(prune="relative").semantic() != SweepConfig(prune="relative", prune_rel_floor=0.5).semantic()


def test_config_version_3_upgrades_older_runs_as_lossless():
    assert CONFIG_VERSION >= 3
    old = {"model": {}, "saes": [], "sweep": {"edge_top_k": 32}, "ingest": {"too_long": "reject"}}
    new = upgrade_config(old, 2)
    assert new["sweep"]["prune"] == "none" and new["sweep"]["edge_top_k"] == 32
    assert SweepConfig(**new["sweep"]).prune == "none"
    assert upgrade_config({"sweep": {}}, 1)["sweep"]["prune"] == "none"
