"""Pruning a graph file, checked against plain brute-force computations on random layered graphs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from featuregraph.errors import InputError
from featuregraph.query.graph_prune import Pruning, fit_size, node_influence, prune, to_bytes
from featuregraph.store.graph_model import GraphFile


def random_graph(seed: int, n_layers: int = 4, per_layer: int = 5, p_link: float = 0.5) -> GraphFile:
    """Embeddings, features in n_layers layers, three logits; links only go to later layers."""
    rng = random.Random(seed)
    nodes, layers = [], []
    for pos in range(2):
        nodes.append({"node_id": f"E_{pos}", "feature": pos, "layer": "E", "ctx_idx": pos, "feature_type": "embedding",
                      "jsNodeId": f"E_{pos}", "clerp": ""})  # fmt: skip
        layers.append(-1)
    for layer in range(n_layers):
        for i in range(per_layer):
            nodes.append({"node_id": f"{layer}_{i}_1", "feature": i, "layer": str(layer), "ctx_idx": 1,
                          "feature_type": "cross layer transcoder", "jsNodeId": f"{layer}_{i}", "clerp": ""})  # fmt: skip
            layers.append(layer)
    probs = [0.5, 0.3, 0.2]
    for t, p in enumerate(probs):
        nodes.append({"node_id": f"L_{t}", "feature": t, "layer": str(n_layers), "ctx_idx": 1, "feature_type": "logit",
                      "jsNodeId": f"L_{t}", "clerp": f'Output "{t}" (p={p})', "token_prob": p})  # fmt: skip
        layers.append(n_layers)
    links = []
    for s in range(len(nodes)):
        for t in range(len(nodes)):
            if layers[s] < layers[t] and layers[s] < n_layers and rng.random() < p_link:
                links.append({"source": nodes[s]["node_id"], "target": nodes[t]["node_id"],
                              "weight": rng.choice([-1, 1]) * rng.uniform(0.01, 2.0)})  # fmt: skip
    return GraphFile.model_validate({"metadata": {"slug": "r", "scan": "m", "prompt_tokens": ["a", "b"], "prompt": "ab"},
                                     "qParams": {}, "nodes": nodes, "links": links})  # fmt: skip


def dense(graph: GraphFile):
    ids = [n.node_id for n in graph.nodes]
    at = {x: i for i, x in enumerate(ids)}
    n = len(ids)
    a = np.zeros((n, n))
    for link in graph.links:
        a[at[link.target], at[link.source]] = abs(link.weight)
    rows = a.sum(1, keepdims=True)
    a = np.divide(a, rows, out=np.zeros_like(a), where=rows > 0)
    w = np.array([n.token_prob if n.feature_type == "logit" else 0.0 for n in graph.nodes])
    return ids, at, a, w


def brute_influence(graph: GraphFile) -> np.ndarray:
    _, _, a, w = dense(graph)
    total, power = np.zeros_like(w), np.eye(len(w))
    for _ in range(len(w)):  # every path of every length, one power at a time
        power = power @ a
        total += w @ power
    return total


def brute_cut(scores: dict, threshold: float) -> set:
    order = sorted(scores, key=lambda k: -scores[k])  # sorted() is stable, as the code's argsort is
    total = 0.0
    for k in order:
        total += scores[k]
    kept, running = set(), 0.0
    for k in order:
        if running < threshold * total and scores[k] > 0:
            kept.add(k)
        running += scores[k]
    return kept


@pytest.mark.parametrize("seed", range(6))
def test_influence_is_the_sum_over_every_path(seed):
    graph = random_graph(seed)
    np.testing.assert_allclose(node_influence(graph), brute_influence(graph), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("seed,node_t,edge_t", [(0, 0.8, 0.98), (1, 0.5, 0.9), (2, 0.95, 0.5), (3, 1.0, 1.0)])
def test_cumulative_influence_pruning_matches_brute_force(seed, node_t, edge_t):
    graph = random_graph(seed)
    ids, at, a, w = dense(graph)
    infl = brute_influence(graph)
    logits = {x for x, n in zip(ids, graph.nodes, strict=True) if n.feature_type == "logit"}
    kept_nodes = logits | brute_cut({x: infl[at[x]] for x in ids if x not in logits}, node_t)
    between = [link for link in graph.links if link.source in kept_nodes and link.target in kept_nodes]
    scores = {(k.source, k.target): a[at[k.target], at[k.source]] * (infl[at[k.target]] + w[at[k.target]])
              for k in between}  # fmt: skip
    kept_links = brute_cut(scores, edge_t)
    linked = {x for pair in kept_links for x in pair}
    want_nodes = {x for x in kept_nodes if x in linked or x in logits}

    pruned = prune(graph, Pruning(node_threshold=node_t, edge_threshold=edge_t))
    assert {(k.source, k.target) for k in pruned.links} == kept_links
    assert {n.node_id for n in pruned.nodes} == want_nodes
    assert pruned.metadata.pruning_settings.node_threshold == node_t
    for n in pruned.nodes:
        assert n.influence == pytest.approx(infl[at[n.node_id]], rel=1e-9, abs=1e-14)
    if node_t < 1:
        assert len(kept_nodes) < len(ids)  # the test prunes something


@pytest.mark.parametrize("seed", range(3))
def test_top_k_and_min_weight_match_brute_force(seed):
    graph = random_graph(seed)
    order = {n.node_id: i for i, n in enumerate(graph.nodes)}
    for k in (1, 2, 3):
        want = set()
        for s in {x.source for x in graph.links}:
            out = sorted(
                (x for x in graph.links if x.source == s), key=lambda x: (-abs(x.weight), order[x.target])
            )
            want |= {(x.source, x.target) for x in out[:k]}
        got = prune(graph, Pruning(top_k=k))
        assert {(x.source, x.target) for x in got.links} == want
        linked = {e for pair in want for e in pair}
        assert {n.node_id for n in got.nodes} == linked | {
            n.node_id for n in graph.nodes if n.feature_type == "logit"
        }
    for floor in (0.5, 1.0, 1.9):
        got = prune(graph, Pruning(min_weight=floor))
        assert {(x.source, x.target) for x in got.links} == {(x.source, x.target) for x in graph.links
                                                             if abs(x.weight) >= floor}  # fmt: skip


def test_size_cap_keeps_the_largest_number_of_strongest_links_that_fits():
    graph = random_graph(4)
    full = to_bytes(graph)
    cap = len(full) * 2 // 3
    fitted, data, dropped = fit_size(graph, cap)
    assert len(data) <= cap and data == to_bytes(fitted)
    by_weight = sorted(graph.links, key=lambda x: -abs(x.weight))
    kept = len(by_weight) - dropped
    assert {(x.source, x.target) for x in fitted.links} == {(x.source, x.target) for x in by_weight[:kept]}
    # one more link would not fit
    bigger = GraphFile.model_validate(
        {**graph.dump(), "links": [x.model_dump() for x in by_weight[: kept + 1]]}
    )
    from featuregraph.query.graph_prune import _subgraph

    assert len(to_bytes(_subgraph(bigger, np.ones(kept + 1, bool)))) > cap
    with pytest.raises(InputError):
        fit_size(graph, 10)


def test_a_cycle_is_refused_in_one_line():
    graph = random_graph(0)
    doc = graph.dump()
    doc["links"] = [x for x in doc["links"] if {x["source"], x["target"]} != {"L_0", "0_0_1"}]
    doc["links"] += [
        {"source": "L_0", "target": "0_0_1", "weight": 1.0},
        {"source": "0_0_1", "target": "L_0", "weight": 1.0},
    ]
    with pytest.raises(InputError, match="cycle"):
        node_influence(GraphFile.model_validate(doc))
