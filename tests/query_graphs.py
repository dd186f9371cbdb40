"""Hand-built graphs for the query-layer tests, written through the store's own writers.

HAND_GRAPH is small enough to work out every answer on paper (the tests spell them out).
Layers 0..3, features < 10, a tag per prompt; weights are exact in float32 where it matters.

    prompt 0 (tag a): 0.1 -> 1.2 +0.5, 1.2 -> 2.3 -0.4, 2.3 -> 3.4 +0.3, 0.1 -> 1.5 +0.1, 1.5 -> 2.6 +0.2
    prompt 1 (tag a): 0.1 -> 1.2 +0.6, 1.2 -> 2.3 -0.2, 2.3 -> 3.4 +0.1
    prompt 2 (tag b): 0.1 -> 1.2 +0.7, 1.2 -> 2.3 +0.3, 2.3 -> 3.4 +0.2, 0.1 -> 1.5 +0.2, 1.5 -> 2.6 +0.4,
                      2.6 -> 3.7 -0.1
    prompt 3 (tag b): 0.1 -> 1.2 +0.2, 1.2 -> 2.3 -0.5, 1.5 -> 2.6 +0.1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import make_run

from featuregraph.store.db import Database, open_database
from featuregraph.store.models import PROMPT_TABLES, PromptResult
from featuregraph.store.runs import create_run, finish_run, write_prompt_results

Edge = tuple[int, int, int, int, float]  # up_layer, up_feature, down_layer, down_feature, weight

HAND_GRAPH: dict[int, tuple[str, list[Edge]]] = {
    0: ("a", [(0, 1, 1, 2, 0.5), (1, 2, 2, 3, -0.4), (2, 3, 3, 4, 0.3), (0, 1, 1, 5, 0.1), (1, 5, 2, 6, 0.2)]),
    1: ("a", [(0, 1, 1, 2, 0.6), (1, 2, 2, 3, -0.2), (2, 3, 3, 4, 0.1)]),
    2: ("b", [(0, 1, 1, 2, 0.7), (1, 2, 2, 3, 0.3), (2, 3, 3, 4, 0.2), (0, 1, 1, 5, 0.2), (1, 5, 2, 6, 0.4),
              (2, 6, 3, 7, -0.1)]),
    3: ("b", [(0, 1, 1, 2, 0.2), (1, 2, 2, 3, -0.5), (1, 5, 2, 6, 0.1)]),
}  # fmt: skip

# Added after an optimize: the chain 0.1 -> 1.2 -> 2.3 -> 3.4 (+ - +) twice more, and 2.6 -> 3.7
# (seen once before, in prompt 2) again, so that it moves from edge_summary to edge_occurrences.
LATER_PROMPTS: dict[int, tuple[str, list[Edge]]] = {
    4: ("a", [(0, 1, 1, 2, 0.4), (1, 2, 2, 3, -0.3), (2, 3, 3, 4, 0.5), (1, 5, 2, 6, 0.3), (2, 6, 3, 7, -0.2)]),
    5: ("b", [(0, 1, 1, 2, 0.3), (1, 2, 2, 3, -0.6), (2, 3, 3, 4, 0.6)]),
}  # fmt: skip

VOCAB = [f"t{i}" for i in range(8)]

RUN_ROW = make_run()


def sae_rows(layers: range, d_sae: int = 10) -> list[dict]:
    return [
        {"layer": layer, "site_kind": "resid", "hook_name": f"blocks.{layer}.hook_resid_pre", "d_in": 4,
         "d_sae": d_sae, "architecture": "standard", "release": None, "sae_id": None, "path": None,
         "sha256": f"sae{layer}", "neuronpedia_id": None, "config": {}}
        for layer in layers
    ]  # fmt: skip


def prompt_result(
    prompt_id: int,
    edges: list[Edge],
    tag: str | None = None,
    tokens: list[str] | None = None,
    activations: list[tuple[int, int, int, float]] = (),
    logits: list[tuple[int, int, int, float, float]] = (),
) -> PromptResult:
    """A PromptResult with the given edges, (layer, position, feature, value) activations and
    (layer, feature, token_id, dlogp, dprob) logit effects; the rest minimal."""
    tokens = tokens or ["<bos>", f"p{prompt_id}"]
    abl = sorted({(ul, uf) for ul, uf, *_ in edges} | {(layer, f) for layer, f, *_ in logits})

    def cols(name: str, rows) -> dict[str, np.ndarray]:
        spec = PROMPT_TABLES[name]
        rows = list(rows)
        return {c: np.array([r[i] for r in rows], dtype=spec[c]) for i, c in enumerate(spec)}

    return PromptResult(
        prompt_id=prompt_id,
        text=" ".join(tokens[1:]),
        tag=tag,
        tables={
            "tokens": cols("tokens", [(i, i, t) for i, t in enumerate(tokens)]),
            "top_next_tokens": cols("top_next_tokens", [(1, 0, 0.5, -0.69)]),
            "activations": cols("activations", activations),
            "ablations": cols("ablations", [(layer, f, 1, 1.0, 1.0) for layer, f in abl]),
            "edges": cols("edges", edges),
            "logit_effects": cols("logit_effects", logits),
        },
    )


def new_run(db: Database, key: str = "hand", layers: range = range(4)) -> int:
    return create_run(db, key, make_run(), sae_rows(layers), VOCAB)


def write_graph(db: Database, run_id: int, graph: dict[int, tuple[str, list[Edge]]], group: int = 2) -> None:
    """Write ``graph`` in groups of ``group`` prompts (one transaction each, like an ingest)."""
    ids = sorted(graph)
    for start in range(0, len(ids), group):
        write_prompt_results(
            db, run_id, [prompt_result(p, graph[p][1], graph[p][0]) for p in ids[start : start + group]]
        )


def hand_database(path: Path | str) -> Path:
    """A database holding HAND_GRAPH as run 1."""
    with open_database(path) as db:
        run = new_run(db)
        write_graph(db, run, HAND_GRAPH)
        finish_run(db, run, "complete")
    return Path(path)
