"""A stored prompt graph as a Neuronpedia / circuit-tracer graph file (docs/graphs.md#export).

:func:`stored_graph` reads one prompt of one run as a :class:`GraphFile`: an imported graph
exactly as it was imported; a sweep's graph (exact ablation, or any method writing ``edges``)
built from its tables. The sweep's conventions (docs/graphs.md#export):

- a feature node per (layer, feature) of the prompt's edges and logit effects, at the read
  position (the sweep ablates a feature at every position and reads at one, so its edges sum
  over positions; the read position is the one both ends share); ``feature`` is the Cantor id
  of (layer, index) with the index decoded from the stored feature, ``clerp`` the featuregraph
  name (``L.F``, ``L.att.F``, ...); a non-residual feature's node id carries its site
  (``{L}_att_{idx}_{pos}``) and its ``feature_type`` names it (graph_model.SITE_FEATURE_TYPE);
- a logit node per clean top-next token, with its clean probability (clerp ``Output "tok" (p=...)``);
- link weight = -(edge weight) and -(dlogp) for feature -> logit links: a file's weight is
  positive when the source promotes the target, featuregraph's is "ablated minus clean".
"""

from __future__ import annotations

import json
import time
from typing import Any

import featuregraph
from featuregraph.errors import NotFoundError
from featuregraph.store.db import Database
from featuregraph.store.graph_model import (
    GRAPH_SCHEMA_VERSION,
    SITE_FEATURE_TYPE,
    SITE_INFIX,
    GraphFile,
    cantor,
)
from featuregraph.store.graph_rows import LAYER_INT_KEY
from featuregraph.store.models import Node

RUNS_OF_PROMPT = "SELECT DISTINCT run_id FROM prompts WHERE prompt_id = ? ORDER BY run_id"
GRAPH_DOCUMENT = "SELECT document FROM graphs WHERE run_id = ? AND prompt_id = ?"
GRAPH_NODES = """
SELECT node_id, raw_feature, layer_label, position, feature_type, js_node_id, clerp, influence, activation,
       token_prob, is_target_logit, extra
FROM graph_nodes WHERE run_id = ? AND prompt_id = ? ORDER BY node_index
"""
GRAPH_LINKS = """
SELECT s.node_id, t.node_id, l.weight
FROM graph_links l
JOIN graph_nodes s ON s.run_id = l.run_id AND s.prompt_id = l.prompt_id AND s.node_index = l.source_index
JOIN graph_nodes t ON t.run_id = l.run_id AND t.prompt_id = l.prompt_id AND t.node_index = l.target_index
WHERE l.run_id = ? AND l.prompt_id = ?
"""
SWEEP_RUN = "SELECT model, model_config, read_position FROM runs WHERE run_id = ?"
SWEEP_PROMPT = "SELECT text, n_tokens FROM prompts WHERE run_id = ? AND prompt_id = ?"
SWEEP_TOKENS = "SELECT token FROM tokens WHERE run_id = ? AND prompt_id = ? ORDER BY position"
SWEEP_SAES = "SELECT layer, neuronpedia_id FROM run_saes WHERE run_id = ? ORDER BY layer"
SWEEP_EDGES = """
SELECT up_layer, up_feature, down_layer, down_feature, weight FROM edges
WHERE run_id = ? AND prompt_id = ?
"""
# The clean top-next tokens: the logit nodes, with their token text from the run's vocabulary.
SWEEP_LOGITS = """
SELECT t.token_id, coalesce(v.token, '<' || t.token_id || '>'), t.prob
FROM top_next_tokens t LEFT JOIN vocab v ON v.run_id = t.run_id AND v.token_id = t.token_id
WHERE t.run_id = ? AND t.prompt_id = ? ORDER BY t.rank
"""
SWEEP_LOGIT_EFFECTS = """
SELECT layer, feature, token_id, dlogp FROM logit_effects WHERE run_id = ? AND prompt_id = ?
"""
# A feature's activation at the read position, else the largest over the positions it was ablated at.
SWEEP_ACTIVATIONS = """
SELECT layer, feature, max(activation) FROM activations
WHERE run_id = ? AND prompt_id = ? AND position = ? GROUP BY ALL
UNION ALL
SELECT a.layer, a.feature, a.max_activation FROM ablations a
WHERE a.run_id = ? AND a.prompt_id = ?
  AND NOT EXISTS (SELECT 1 FROM activations x WHERE x.run_id = a.run_id AND x.prompt_id = a.prompt_id
                  AND x.position = ? AND x.layer = a.layer AND x.feature = a.feature)
"""


def choose_run(db: Database, prompt: int, run: int | None) -> int:
    """``run``, or the one run holding ``prompt``; NotFoundError naming the choices otherwise."""
    runs = [int(r[0]) for r in db.fetchall(RUNS_OF_PROMPT, [prompt])]
    if run is not None:
        if run not in runs:
            raise NotFoundError(
                f"run {run} has no prompt {prompt} in {db.path} (runs with it: {runs or 'none'})"
            )
        return run
    if not runs:
        raise NotFoundError(f"no run of {db.path} has a prompt {prompt}")
    if len(runs) > 1:
        raise NotFoundError(f"prompt {prompt} is in runs {runs} of {db.path}: pick one with --run")
    return runs[0]


def stored_graph(db: Database, prompt: int, run: int | None = None) -> GraphFile:
    """Prompt ``prompt`` of ``run`` (default: the one run holding it) as a graph file, unpruned."""
    run_id = choose_run(db, prompt, run)
    doc = db.fetchone(GRAPH_DOCUMENT, [run_id, prompt])
    if doc is not None:
        return _imported(db, run_id, prompt, json.loads(doc[0]))
    return _swept(db, run_id, prompt)


def _imported(db: Database, run_id: int, prompt: int, document: dict[str, Any]) -> GraphFile:
    nodes = []
    for node_id, raw, label, pos, ftype, js, clerp, influence, act, prob, target, extra in db.fetchall(
        GRAPH_NODES, [run_id, prompt]
    ):
        more = json.loads(extra) if extra else {}
        layer: int | str = int(label) if more.pop(LAYER_INT_KEY, False) else label
        node = {"node_id": node_id, "feature": raw, "layer": layer, "ctx_idx": pos, "feature_type": ftype,
                "jsNodeId": js, "clerp": clerp}  # fmt: skip
        optional = {"influence": influence, "activation": act, "token_prob": prob, "is_target_logit": target}
        node.update({k: v for k, v in optional.items() if v is not None})
        node.update(more)
        nodes.append(node)
    links = [
        {"source": s, "target": t, "weight": -w} for s, t, w in db.fetchall(GRAPH_LINKS, [run_id, prompt])
    ]
    return canonical({**document, "nodes": nodes, "links": links})


def canonical(doc: dict[str, Any]) -> GraphFile:
    """``doc`` validated, its links in node order (by source, then target): the one order every
    export writes, so the same graph always gives the same file."""
    order = {n["node_id"]: i for i, n in enumerate(doc["nodes"])}
    doc["links"] = sorted(
        doc["links"], key=lambda link: (order.get(link["source"], -1), order.get(link["target"], -1))
    )
    return GraphFile.model_validate(doc)


def neuronpedia_source(saes: list[tuple[int, str | None]]) -> tuple[str | None, str | None]:
    """``(scan, source_set)`` shared by every SAE's Neuronpedia id ``{scan}/{layer}-{set}``
    (``gpt2-small/5-res-jb`` -> ``("gpt2-small", "res-jb")``); Nones unless all SAEs agree."""
    found = set()
    for layer, np_id in saes:
        scan, _, source = (np_id or "").partition("/")
        prefix = f"{layer}-"
        if not scan or not source.startswith(prefix):
            return None, None
        found.add((scan, source[len(prefix) :]))
    return found.pop() if len(found) == 1 else (None, None)


def _swept(db: Database, run_id: int, prompt: int) -> GraphFile:
    model, model_config, read_position = db.fetchone(SWEEP_RUN, [run_id])
    text, n_tokens = db.fetchone(SWEEP_PROMPT, [run_id, prompt])
    tokens = [r[0] for r in db.fetchall(SWEEP_TOKENS, [run_id, prompt])]
    at = read_position if read_position >= 0 else n_tokens + read_position
    scan, source_set = neuronpedia_source(db.fetchall(SWEEP_SAES, [run_id]))
    edges = db.fetchall(SWEEP_EDGES, [run_id, prompt])
    effects = db.fetchall(SWEEP_LOGIT_EFFECTS, [run_id, prompt])
    logits = db.fetchall(SWEEP_LOGITS, [run_id, prompt])
    acts = {
        (int(ly), int(f)): a
        for ly, f, a in db.fetchall(SWEEP_ACTIVATIONS, [run_id, prompt, at, run_id, prompt, at])
    }

    features = sorted(
        {(u, f) for u, f, *_ in edges}
        | {(d, g) for _, _, d, g, _ in edges}
        | {(ly, f) for ly, f, *_ in effects}
    )
    n_layers = json.loads(model_config).get("n_layers") if model_config else None
    logit_layer = max([(n_layers or 0)] + [ly for ly, _ in features]) + 1

    def fid(layer: int, feature: int) -> str:
        node = Node(layer, feature)
        infix = "" if node.site_kind == "resid" else f"{SITE_INFIX[node.site_kind]}_"
        return f"{layer}_{infix}{node.index}_{at}"

    nodes: list[dict[str, Any]] = []
    for layer, feature in features:
        fnode = Node(layer, feature)
        node = {"node_id": fid(layer, feature), "feature": cantor(layer, fnode.index), "layer": str(layer),
                "ctx_idx": at, "feature_type": SITE_FEATURE_TYPE[fnode.site_kind], "jsNodeId": fid(layer, feature),
                "clerp": str(fnode)}  # fmt: skip
        if acts.get((layer, feature)) is not None:
            node["activation"] = float(acts[(layer, feature)])
        nodes.append(node)
    logit_ids = {}
    for rank, (token_id, token, prob) in enumerate(logits):
        logit_ids[token_id] = f"{logit_layer}_{token_id}_{at}"
        nodes.append({
            "node_id": logit_ids[token_id], "feature": int(token_id), "layer": str(logit_layer), "ctx_idx": at,
            "feature_type": "logit", "jsNodeId": f"L_{token_id}-{at}", "clerp": f'Output "{token}" (p={prob:.3f})',
            "token_prob": float(prob), "is_target_logit": rank == 0,
        })  # fmt: skip
    links = [{"source": fid(u, f), "target": fid(d, g), "weight": -float(w)} for u, f, d, g, w in edges]
    links += [
        {"source": fid(ly, f), "target": logit_ids[t], "weight": -float(dlogp)}
        for ly, f, t, dlogp in effects if t in logit_ids
    ]  # fmt: skip
    metadata: dict[str, Any] = {
        "slug": f"featuregraph-run{run_id}-prompt{prompt}", "scan": scan or model, "prompt_tokens": tokens,
        "prompt": text, "schema_version": GRAPH_SCHEMA_VERSION,
        "info": {
            "description": f"featuregraph exact-ablation graph, run {run_id}, prompt {prompt}",
            "generator": {"name": "featuregraph", "version": featuregraph.__version__},
            "create_time_ms": int(time.time() * 1000),
        },
    }  # fmt: skip
    if source_set:
        metadata["feature_details"] = {"neuronpedia_source_set": source_set}
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return canonical({"metadata": metadata, "qParams": qparams, "nodes": nodes, "links": links})


__all__ = ["stored_graph", "choose_run", "canonical", "neuronpedia_source"]
