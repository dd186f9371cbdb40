"""A generator of large synthetic featuregraph databases, for the query-layer benchmark.

The graphs look like a sweep's output at a glance: per prompt, a set of active features at
each of ``layers`` residual SAEs, drawn with Zipf-like popularity (Zipf-Mandelbrot: feature
of popularity rank r is drawn with weight ``(r + q) ** -s``; ids are a random permutation of
ranks per layer), and ``edges_per_up`` edges from every active feature to active features of
the next layer. An edge's sign is mostly a property of the pair (``sign_consistency``), its
magnitude half-normal. On top of that, ``planted`` recurring paths (chains of
``planted_length`` edges through consecutive layers, fixed features and signs, large
weights) are added to a known fraction of prompts each: they are the answer the
recurring-path query must put first.

Output: Parquet staging files (the shape a GPU ingest job would hand to the single loader),
one part per chunk of prompts, already sorted by (prompt, up layer, up feature, down feature).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TAGS = ("news", "code", "fiction", "web")


@dataclass(frozen=True)
class GraphSpec:
    prompts: int = 100_000
    layers: int = 12  # SAE layers 0..layers-1; edges L -> L+1
    d_sae: int = 24_576
    active: int = 12  # active (ablated) features per layer per prompt, before de-duplication
    edges_per_up: int = 4  # edges kept per ablated feature
    zipf_s: float = 1.1
    zipf_q: float = 10.0
    sign_consistency: float = 0.85
    planted: int = 8
    planted_length: int = 6  # edges per planted path
    planted_rates: tuple[float, ...] = (0.05, 0.04, 0.032, 0.025, 0.02, 0.016, 0.013, 0.01)
    logit_tokens: int = 1  # tokens promoted and suppressed kept per ablation
    d_vocab: int = 50_257
    chunk: int = 5_000  # prompts per staging part
    seed: int = 0
    # |weight| of the random edges: half-normal x 0.25 when weight_log10_sigma is None, else
    # log-normal with this median and spread (in decades), at least weight_floor (a sweep's
    # edge_floor): what the demo database shows (see demo_calibrated).
    weight_log10_sigma: float | None = None
    weight_median: float = 0.0026
    weight_floor: float = 1e-4


def demo_calibrated(prompts: int, d_sae: int = 24_576, seed: int = 0, chunk: int = 500) -> GraphSpec:
    """Per-prompt statistics of the demo database (BENCHMARKS.md, "Write scaling": 5 SAEs,
    about 133 ablated features per layer, 15.2 edges per ablation, signs 83% consistent per
    edge, |weight| median 0.0026 with 30% below 10x the 1e-4 floor), over a feature space as wide
    as a GPT-2-small SAE so that distinct edges keep growing with the prompts."""
    return GraphSpec(
        prompts=prompts, layers=5, d_sae=d_sae, active=140, edges_per_up=15, zipf_s=1.0, zipf_q=50.0,
        sign_consistency=0.83, planted=3, planted_length=3, planted_rates=(0.1, 0.01, 0.001),
        logit_tokens=1, chunk=chunk, seed=seed, weight_log10_sigma=1.26,
    )  # fmt: skip


@dataclass
class PlantedPath:
    start_layer: int
    features: list[int]  # planted_length + 1 features, at start_layer, start_layer + 1, ...
    signs: list[int]  # planted_length signs (+1 / -1)
    rate: float
    prompts: int = 0  # prompts it was planted in

    def nodes(self) -> list[str]:
        return [f"{self.start_layer + i}.{f}" for i, f in enumerate(self.features)]


@dataclass
class Generated:
    spec: GraphSpec
    planted: list[PlantedPath]
    edge_rows: int = 0
    logit_rows: int = 0
    parts: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        d = asdict(self)
        return json.dumps(d, indent=1)


def _popularity(spec: GraphSpec) -> np.ndarray:
    ranks = np.arange(1, spec.d_sae + 1, dtype=np.float64)
    p = (ranks + spec.zipf_q) ** -spec.zipf_s
    return np.cumsum(p) / p.sum()


def plant_paths(spec: GraphSpec, rng: np.random.Generator, perm: np.ndarray) -> list[PlantedPath]:
    """Distinct paths through mid-popularity features (ranks 200..5000)."""
    paths = []
    used: set[tuple[int, int]] = set()
    for j in range(spec.planted):
        start = int(rng.integers(0, spec.layers - spec.planted_length))
        feats = []
        for i in range(spec.planted_length + 1):
            while True:
                f = int(perm[start + i, rng.integers(min(200, spec.d_sae // 10), min(5000, spec.d_sae))])
                if (start + i, f) not in used:
                    used.add((start + i, f))
                    feats.append(f)
                    break
        signs = [int(s) for s in rng.choice([-1, 1], spec.planted_length)]
        rate = spec.planted_rates[j % len(spec.planted_rates)]
        paths.append(PlantedPath(start, feats, signs, rate))
    return paths


def _pair_sign(layer: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    h = (up.astype(np.uint64) * np.uint64(2654435761) + down.astype(np.uint64) * np.uint64(40503)
         + layer.astype(np.uint64) * np.uint64(97))  # fmt: skip
    return np.where((h >> np.uint64(7)) & np.uint64(1), 1, -1).astype(np.int8)


def _chunk(spec, rng, cdf, perm, paths, first: int, count: int):
    L, A, M = spec.layers, spec.active, spec.edges_per_up
    ranks = np.minimum(np.searchsorted(cdf, rng.random((count, L, A))), spec.d_sae - 1)
    act = perm[np.arange(L)[None, :, None], ranks]  # [count, L, A] feature ids
    planted_in = []
    for j, path in enumerate(paths):
        hit = np.flatnonzero(rng.random(count) < path.rate)
        planted_in.append(hit)
        path.prompts += len(hit)
        slot = j % A
        for i, f in enumerate(path.features):
            act[hit, path.start_layer + i, slot] = f

    # Random edges: every active feature of layer L to M distinct active slots of layer L+1.
    slots = np.argsort(rng.random((count, L - 1, A, A)), axis=-1)[..., :M]
    shape = (count, L - 1, A, M)
    prompt = np.broadcast_to(np.arange(first, first + count, dtype=np.int64)[:, None, None, None], shape)
    layer = np.broadcast_to(np.arange(L - 1, dtype=np.int64)[None, :, None, None], shape)
    up = np.broadcast_to(act[:, :-1, :, None], shape)
    down = np.take_along_axis(np.broadcast_to(act[:, 1:, None, :], (count, L - 1, A, A)), slots, axis=-1)
    keys = [((prompt << 40) | (layer << 34) | (up.astype(np.int64) << 17) | down).ravel()]
    n_random = keys[0].size
    if spec.weight_log10_sigma is None:
        magnitude = np.abs(rng.standard_normal(n_random)).astype(np.float32) * np.float32(0.25)
    else:
        logs = np.log10(spec.weight_median) + spec.weight_log10_sigma * rng.standard_normal(n_random)
        magnitude = np.maximum(10.0**np.minimum(logs, 1.0), spec.weight_floor * 1.01).astype(np.float32)
    flip = np.where(rng.random(n_random) < spec.sign_consistency, 1, -1).astype(np.int8)
    weights = [magnitude * flip * _pair_sign(layer.ravel(), up.ravel(), down.ravel())]
    # Planted edges come first so that de-duplication keeps them.
    p_keys, p_w = [], []
    for path, hit in zip(paths, planted_in, strict=True):
        for i in range(len(path.signs)):
            k = ((hit.astype(np.int64) + first) << 40) | (np.int64(path.start_layer + i) << 34)
            k |= (np.int64(path.features[i]) << 17) | np.int64(path.features[i + 1])
            p_keys.append(k)
            p_w.append(
                (path.signs[i] * (0.8 + 0.15 * np.abs(rng.standard_normal(len(hit))))).astype(np.float32)
            )
    all_keys = np.concatenate(p_keys + keys)
    all_w = np.concatenate(p_w + weights)
    uniq, idx = np.unique(all_keys, return_index=True)
    w = all_w[idx]
    ul = ((uniq >> 34) & 63).astype(np.int16)
    n = len(uniq)
    edges = pa.table(
        {
            "run_id": pa.array(np.ones(n, np.int32)),
            "prompt_id": pa.array((uniq >> 40).astype(np.int32)),
            "up_layer": pa.array(ul),
            "up_feature": pa.array(((uniq >> 17) & 0x1FFFF).astype(np.int32)),
            "down_layer": pa.array(ul + np.int16(1)),
            "down_feature": pa.array((uniq & 0x1FFFF).astype(np.int32)),
            "weight": pa.array(w),
        }
    )

    # Logit effects: per ablated feature, the top promoted and suppressed tokens; a feature
    # mostly moves "its" tokens (a hash of the feature), sometimes others.
    feats = act.reshape(count, -1)
    abl = np.unique(((np.arange(first, first + count, dtype=np.int64)[:, None] << 40)
                     | (np.repeat(np.arange(L, dtype=np.int64), A)[None, :] << 34) | feats).ravel())  # fmt: skip
    k = spec.logit_tokens
    n_abl = len(abl)
    f_abl = (abl & 0x1FFFF).astype(np.int64)
    own = (f_abl[:, None] * 7919 + np.arange(2 * k)[None, :] * 104729) % spec.d_vocab
    other = rng.integers(0, spec.d_vocab, (n_abl, 2 * k))
    tok = np.where(rng.random((n_abl, 2 * k)) < 0.7, own, other).astype(np.int32)
    mag = np.abs(rng.standard_normal((n_abl, 2 * k))).astype(np.float32)
    sign = np.where(np.arange(2 * k) < k, 1.0, -1.0).astype(np.float32)[None, :]
    logits = pa.table(
        {
            "run_id": pa.array(np.ones(n_abl * 2 * k, np.int32)),
            "prompt_id": pa.array(np.repeat((abl >> 40).astype(np.int32), 2 * k)),
            "layer": pa.array(np.repeat(((abl >> 34) & 63).astype(np.int16), 2 * k)),
            "feature": pa.array(np.repeat(f_abl.astype(np.int32), 2 * k)),
            "token_id": pa.array(tok.ravel()),
            "dlogp": pa.array((mag * sign * np.float32(0.5)).ravel()),
            "dprob": pa.array((mag * sign * np.float32(0.01)).ravel()),
        }
    )
    n_abl_per_prompt = np.bincount((abl >> 40).astype(np.int64) - first, minlength=count)
    return edges, logits, n_abl_per_prompt


def generate(out: str | Path, spec: GraphSpec) -> Generated:
    """Write the staging files for ``spec`` under ``out``; return what was planted."""
    out = Path(out)
    for sub in ("edges", "logit_effects"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    cdf = _popularity(spec)
    perm = np.stack([rng.permutation(spec.d_sae) for _ in range(spec.layers)])
    paths = plant_paths(spec, rng, perm)
    gen = Generated(spec, paths)
    prompt_parts = []
    for part, first in enumerate(range(0, spec.prompts, spec.chunk)):
        count = min(spec.chunk, spec.prompts - first)
        edges, logits, n_abl = _chunk(spec, rng, cdf, perm, paths, first, count)
        name = f"part-{part:05d}.parquet"
        pq.write_table(edges, out / "edges" / name, compression="zstd")
        pq.write_table(logits, out / "logit_effects" / name, compression="zstd")
        gen.edge_rows += edges.num_rows
        gen.logit_rows += logits.num_rows
        gen.parts.append(name)
        ids = np.arange(first, first + count)
        texts = [f"synthetic prompt {i}" for i in ids]
        prompt_parts.append(
            pa.table(
                {
                    "run_id": pa.array(np.ones(count, np.int32)),
                    "prompt_id": pa.array(ids.astype(np.int32)),
                    "text": pa.array(texts),
                    "text_sha256": pa.array([hashlib.sha256(t.encode()).hexdigest() for t in texts]),
                    "tag": pa.array([TAGS[i % len(TAGS)] for i in ids]),
                    "n_tokens": pa.array(np.full(count, 16, np.int16)),
                    "n_ablations": pa.array(n_abl.astype(np.int32)),
                }
            )
        )
    pq.write_table(pa.concat_tables(prompt_parts), out / "prompts.parquet")
    (out / "planted.json").write_text(gen.to_json())
    return gen


def prompt_results(table: pa.Table) -> list:
    """The ingest's PromptResults (edges only, one token each) of the prompts in an edge ``table``,
    in prompt order: what the benchmarks commit through ``store.runs.write_prompt_results``."""
    from featuregraph.store.models import PROMPT_TABLES, PromptResult

    cols = {c: table.column(c).to_numpy() for c in table.column_names}
    empty = {name: {c: np.empty(0, t) for c, t in spec.items()} for name, spec in PROMPT_TABLES.items()}
    out = []
    order = np.argsort(cols["prompt_id"], kind="stable")
    ids, starts = np.unique(cols["prompt_id"][order], return_index=True)
    bounds = list(starts) + [len(order)]
    for i, pid in enumerate(ids):
        rows = order[bounds[i] : bounds[i + 1]]
        tables = dict(empty, edges={c: cols[c][rows] for c in PROMPT_TABLES["edges"]})
        tables["tokens"] = {"position": np.array([0], np.int16), "token_id": np.array([0], np.int32),
                            "token": np.array(["tok0"], object)}  # fmt: skip
        out.append(PromptResult(int(pid), f"synthetic prompt {pid}", "web", None, tables))
    return out
