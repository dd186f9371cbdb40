"""Hand-built graph files in circuit-tracer's and Neuronpedia's conventions, for the graph tests.

CT_GRAPH follows circuit-tracer's node conventions (docs/graphs.md#node-conventions): a 2-layer
cross-layer transcoder of 100 features (plain ids idx + 100·L), MLP error nodes ``0_{L}_{pos}``,
embeddings ``E_{vocab}_{pos}``, logits ``{nL+1}_{vocab}_{pos}`` with an int layer. NP_GRAPH is
schema_version 1 with Cantor ids, Neuronpedia's ``{L}_cro_{idx}_{pos}`` / ``{L}_error_mlp_{pos}``
ids, null features on errors and embeddings, and one feature node whose id says nothing (its
index comes from the Cantor id alone).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any


def _node(
    node_id: str, feature: int | None, layer: Any, pos: int, ftype: str, js: str, clerp: str = "", **more
):
    return {"node_id": node_id, "feature": feature, "layer": layer, "ctx_idx": pos, "feature_type": ftype,
            "jsNodeId": js, "clerp": clerp, **more}  # fmt: skip


CLT = "cross layer transcoder"
ERR = "mlp reconstruction error"

CT_GRAPH: dict[str, Any] = {
    "metadata": {
        "slug": "ct-hand", "scan": "toy-2l", "prompt_tokens": ["The", " cat"], "prompt": "The cat",
        "transcoder_list": ["tc0", "tc1"], "node_threshold": 0.8,
        "info": {"generator": {"name": "circuit-tracer", "version": "0.1"}},
    },
    "qParams": {"pinnedIds": ["1_12_1"], "supernodes": [["cat", "1_12_1"]], "linkType": "both", "clickedId": "",
                "sg_pos": ""},
    "nodes": [
        _node("E_464_0", 0, "E", 0, "embedding", "E_464-0", "The"),
        _node("E_3290_1", 1, "E", 1, "embedding", "E_3290-1", " cat"),
        _node("0_7_0", 7, "0", 0, CLT, "0_7-0", "det", activation=2.5, influence=0.4),
        _node("0_7_1", 7, "0", 1, CLT, "0_7-0", "det", activation=1.5),
        _node("1_12_1", 112, "1", 1, CLT, "1_12-0", "animal", activation=3.0),
        _node("0_0_1", -1, "0", 1, ERR, "0_1-0", "err"),
        _node("3_262_1", 262, 3, 1, "logit", "L_262-1", 'Output " sat" (p=0.600)', token_prob=0.6, is_target_logit=True),
        _node("3_11_1", 11, 3, 1, "logit", "L_11-1", 'Output "," (p=0.100)'),
    ],
    "links": [
        {"source": "E_464_0", "target": "0_7_0", "weight": 1.0},
        {"source": "E_3290_1", "target": "0_7_1", "weight": 0.5},
        {"source": "0_7_0", "target": "1_12_1", "weight": 0.3},
        {"source": "0_7_1", "target": "1_12_1", "weight": 0.25},
        {"source": "0_7_0", "target": "3_262_1", "weight": 0.4},
        {"source": "0_0_1", "target": "1_12_1", "weight": 0.125},
        {"source": "1_12_1", "target": "3_262_1", "weight": 0.875},
        {"source": "1_12_1", "target": "3_11_1", "weight": -0.25},
    ],
}  # fmt: skip

# Transcoder features are stored with site code 3 (2**28 * 3 + index, docs/graphs.md#feature-sites).
TC = 3 * 2**28

# (kind, layer, feature, position, token_id) of every CT_GRAPH node, in order: worked out by hand.
CT_NODES = [
    ("embedding", None, None, 0, 464), ("embedding", None, None, 1, 3290), ("feature", 0, TC + 7, 0, None),
    ("feature", 0, TC + 7, 1, None), ("feature", 1, TC + 12, 1, None), ("error", 0, None, 1, None),
    ("logit", 3, None, 1, 262), ("logit", 3, None, 1, 11),
]  # fmt: skip
# Its projection: 0.tc.7 -> 1.tc.12 summed over positions, negated (file 0.3 + 0.25).
CT_EDGES = [(0, TC + 7, 1, TC + 12, -0.55)]


def cantor(layer: int, index: int) -> int:  # written out again so the test does not trust the code under test
    return (layer + index) * (layer + index + 1) // 2 + index


NP_GRAPH: dict[str, Any] = {
    "metadata": {
        "slug": "np-hand", "scan": "gpt2-small", "prompt_tokens": ["<|endoftext|>", "Hello", " world"],
        "prompt": "Hello world", "schema_version": 1, "feature_details": {"neuronpedia_source_set": "clt-hp"},
        "pruning_settings": {"node_threshold": 0.8, "edge_threshold": 0.98},
    },
    "qParams": {},
    "nodes": [
        _node("E_15496_1", None, "E", 1, "embedding", "E_15496-1"),
        _node("0_cro_5_1", cantor(0, 5), "0", 1, CLT, "0_cro_5_1"),
        _node("featA", cantor(4, 30000), "4", 2, CLT, "featA"),
        _node("2_error_mlp_2", None, "2", 2, ERR, "2_error_mlp_2"),
        _node("13_995_2", 995, "13", 2, "logit", "L_995-2", 'Output "!" (p=0.250)'),
    ],
    "links": [
        {"source": "E_15496_1", "target": "0_cro_5_1", "weight": 2.0},
        {"source": "0_cro_5_1", "target": "featA", "weight": -0.5},
        {"source": "2_error_mlp_2", "target": "featA", "weight": 0.75},
        {"source": "featA", "target": "13_995_2", "weight": 1.5},
    ],
}  # fmt: skip
NP_EDGES = [(0, TC + 5, 4, TC + 30000, 0.5)]


def variant(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with top-level or metadata keys changed (``meta_slug=...``)."""
    doc = copy.deepcopy(base)
    for key, value in changes.items():
        if key.startswith("meta_"):
            doc["metadata"][key[5:]] = value
        else:
            doc[key] = value
    return doc


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path
