"""Seeded circuit-tracer-style graph files with planted chains; import speed and recovery.

``write_graph_files(folder, n_files, seed)`` writes graph JSON files in circuit-tracer's node
conventions (docs/graphs.md#node-conventions): embeddings ``E_{vocab}_{pos}``, cross-layer
transcoder features ``{L}_{idx}_{pos}`` at several positions, MLP error nodes ``0_{L}_{pos}``,
logits ``{nL+1}_{vocab}_{pos}``; links inside each position's layers, across positions and
across non-adjacent layers (a cross-layer transcoder writes to every later layer). Features
are drawn from a large pool, so a chain of random links rarely recurs; on top, ``PLANTED``
chains (three links through consecutive layers, fixed features, each link split over two
positions so the projection has to sum them) are added to a known share of the files.
``--from-db DB`` draws the feature pool and prompts from a featuregraph database (the demo's).

    python benchmarks/graph_files_bench.py /tmp/graphs.duckdb --files 2000

writes the files to a temporary folder, imports them, prints files/s and edge rows/s, and
checks that ``recurring_paths`` ranks the planted chains first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from pathlib import Path

N_LAYERS = 6
N_POOL = 4000  # features per layer the random part draws from
# (layers 1..4 features, share of files): the answer recurring_paths must put first, in this order.
PLANTED = [((11, 22, 33, 44), 0.5), ((101, 202, 303, 404), 0.35), ((7, 8, 9, 10), 0.2)]
WORDS = [
    "The",
    " cat",
    " sat",
    " on",
    " the",
    " mat",
    " and",
    " a",
    " dog",
    " ran",
    " to",
    " it",
    " home",
    ".",
]


def _feature(layer: int, idx: int, pos: int, act: float) -> dict:
    return {"node_id": f"{layer}_{idx}_{pos}", "feature": idx + 10_000 * layer, "layer": str(layer), "ctx_idx": pos,
            "feature_type": "cross layer transcoder", "jsNodeId": f"{layer}_{idx}-0", "clerp": "",
            "activation": act}  # fmt: skip


def one_graph(rng: random.Random, slug: str, tokens: list[str], pool: dict[int, list[int]]) -> dict:
    """One file's document (see the module doc)."""
    n_pos = len(tokens)
    nodes: dict[str, dict] = {}
    links: dict[tuple[str, str], float] = {}

    def add_link(s: str, t: str, w: float) -> None:
        links[(s, t)] = links.get((s, t), 0.0) + w

    for pos, tok in enumerate(tokens):
        vocab = 1000 + WORDS.index(tok) if tok in WORDS else 999
        nodes[f"E_{vocab}_{pos}"] = {"node_id": f"E_{vocab}_{pos}", "feature": pos, "layer": "E", "ctx_idx": pos,
                                     "feature_type": "embedding", "jsNodeId": f"E_{vocab}-{pos}", "clerp": tok}  # fmt: skip
    for layer in range(N_LAYERS):
        for pos in range(n_pos):
            for idx in rng.sample(pool[layer], min(2, len(pool[layer]))):
                nodes[f"{layer}_{idx}_{pos}"] = _feature(layer, idx, pos, round(rng.uniform(0.1, 5), 4))
        for pos in rng.sample(range(n_pos), 2):
            nodes[f"0_{layer}_{pos}"] = {"node_id": f"0_{layer}_{pos}", "feature": -1, "layer": str(layer),
                                         "ctx_idx": pos, "feature_type": "mlp reconstruction error",
                                         "jsNodeId": f"{layer}_{pos}-0", "clerp": ""}  # fmt: skip
    last = n_pos - 1
    for planted, share in PLANTED:
        if rng.random() < share:
            for layer, idx in enumerate(planted, start=1):
                for pos in (last - 1, last):
                    nodes[f"{layer}_{idx}_{pos}"] = _feature(layer, idx, pos, 3.0)
            for layer in range(1, len(planted)):
                for pos in (last - 1, last):  # the same link at two positions: the projection sums them
                    add_link(
                        f"{layer}_{planted[layer - 1]}_{pos}", f"{layer + 1}_{planted[layer]}_{last}", 0.5
                    )
    probs = [0.4, 0.2, 0.1, 0.05, 0.02]
    for rank, p in enumerate(probs):
        vocab = 50 + rank
        nodes[f"{N_LAYERS + 1}_{vocab}_{last}"] = {
            "node_id": f"{N_LAYERS + 1}_{vocab}_{last}", "feature": vocab, "layer": N_LAYERS + 1, "ctx_idx": last,
            "feature_type": "logit", "jsNodeId": f"L_{vocab}-{last}", "clerp": f'Output "w{vocab}" (p={p:.3f})',
            "token_prob": p, "is_target_logit": rank == 0,
        }  # fmt: skip
    ids = list(nodes)
    layer_of = {k: (-1 if nodes[k]["layer"] == "E" else int(nodes[k]["layer"])) for k in ids}
    for s in ids:
        later = [t for t in ids if layer_of[t] > layer_of[s] and nodes[t]["ctx_idx"] >= nodes[s]["ctx_idx"]]
        for t in rng.sample(later, min(3, len(later))):  # any later layer, this or a later position
            add_link(s, t, round(rng.uniform(-1, 1) * 0.2, 5))
    return {
        "metadata": {"slug": slug, "scan": "toy-clt", "prompt_tokens": tokens, "prompt": "".join(tokens),
                     "info": {"generator": {"name": "circuit-tracer", "version": "bench"}},
                     "transcoder_list": [f"tc{i}" for i in range(N_LAYERS)]},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""},
        "nodes": list(nodes.values()),
        "links": [{"source": s, "target": t, "weight": w} for (s, t), w in links.items() if w != 0],
    }  # fmt: skip


def feature_pool(db_path: str | None, seed: int) -> tuple[dict[int, list[int]], list[list[str]]]:
    """Features per layer and prompts: from a featuregraph database, or synthetic."""
    rng = random.Random(seed)
    if db_path is None:
        pool = {layer: rng.sample(range(20_000, 60_000), N_POOL) for layer in range(N_LAYERS)}
        prompts = [[rng.choice(WORDS) for _ in range(rng.randint(6, 12))] for _ in range(50)]
        return pool, prompts
    from featuregraph.store.db import open_database

    with open_database(db_path, read_only=True) as db:
        found = db.fetchall(
            "SELECT layer, list(DISTINCT feature) FROM activations GROUP BY layer ORDER BY layer"
        )
        texts = db.fetchall(
            "SELECT list(token ORDER BY position) FROM tokens GROUP BY run_id, prompt_id LIMIT 200"
        )
    layers = [sorted(f) for _, f in found]
    if not layers or not texts:
        raise SystemExit(f"{db_path} has no activations or tokens to draw features and prompts from")
    pool = {layer: [f + 20_000 for f in layers[layer % len(layers)]] for layer in range(N_LAYERS)}
    return pool, [t[0] for t in texts]


def write_graph_files(folder: Path, n_files: int, seed: int = 0, db_path: str | None = None) -> list[Path]:
    """``n_files`` seeded graph files in ``folder``."""
    rng = random.Random(seed)
    pool, prompts = feature_pool(db_path, seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        path = folder / f"graph_{i:05d}.json"
        path.write_text(json.dumps(one_graph(rng, f"bench-{seed}-{i}", rng.choice(prompts), pool)))
        paths.append(path)
    return paths


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (import-graph's parsing workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="database to import into (created)")
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--from-db", default=None, help="draw features and prompts from this featuregraph database"
    )
    args = parser.parse_args()
    import featuregraph.query.api as api
    from featuregraph.store.db import open_database
    from featuregraph.store.graph_import import import_graphs

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = write_graph_files(Path(tmp), args.files, args.seed, args.from_db)
        size = sum(f.stat().st_size for f in files) / len(files)
        print(f"wrote {len(files)} files ({size / 1024:.1f} KiB each) in {time.perf_counter() - t0:.1f}s")
        cpu = _cpu_seconds()
        s = import_graphs(args.db, [tmp])
        cpu = _cpu_seconds() - cpu  # the parsing workers' CPU included
    print(f"imported {s.n_imported} files in {s.seconds:.2f}s: {s.n_imported / s.seconds:.0f} files/s, "
          f"{s.n_links / s.seconds:.0f} link rows/s, {s.n_edges / s.seconds:.0f} projected edge rows/s; "
          f"{s.n_imported / cpu:.0f} files per CPU second (load average {os.getloadavg()[0]:.2f})")  # fmt: skip
    with open_database(args.db, read_only=True) as db:
        top = api.recurring_paths(db, 3, 2, limit=5)
    print(top.select("path", "support").head(5))


if __name__ == "__main__":
    main()
