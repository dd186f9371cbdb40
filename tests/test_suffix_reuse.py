"""The ablated block's reuse of clean queries/keys/values, and the suffix batch grouping (ingest/grouping.py).

References: the model's own block on the whole sequence (a block that recomputes everything), the
plain reference sweep (one full forward per feature) to 1e-5, and a brute-force padding count.
"""

from __future__ import annotations

import random

import pytest
import torch
from helpers import build_sites
from test_sweep_reference import D_VOCAB, _compare

from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.grouping import plan_batches
from featuregraph.ingest.reference import reference_sweep
from featuregraph.ingest.suffix import BlockWeights, block_suffix, qkv
from featuregraph.ingest.sweep import PromptInput, Sweeper

DENSE = dict(edge_top_k=10_000, edge_floor=0.0, logit_top_k=D_VOCAB // 2)


@pytest.fixture(scope="module")
def model():
    return syn.make_model(n_layers=3, d_model=32, d_vocab=D_VOCAB, n_ctx=24, seed=11)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("last", [False, True])
def test_ablated_block_reuse_equals_the_models_own_block(model, fused, last):
    """Rows changed at non-contiguous positions, only at the suffix's first position, or nowhere:
    the block with clean queries/keys/values reused equals the model's block on the whole sequence."""
    torch.manual_seed(0)
    n, start = 12, 4
    block, w = model.blocks[1], BlockWeights.of(model.blocks[1])
    clean = model(torch.randint(1, D_VOCAB, (1, n)), stop_at_layer=1)  # residual entering block 1
    q, k, v = qkv(block, w, clean, fused=False)
    changed_at = [[start + 1, start + 4, start + 7], [start], [], [start + 2, start + 3]]
    x = clean.expand(len(changed_at), n, -1).clone()
    for row, positions in enumerate(changed_at):
        x[row, positions] += torch.randn(len(positions), x.shape[-1])
    want = block(x)[:, start:]  # the model's own block, every position recomputed
    idx = [(row, p - start) for row, positions in enumerate(changed_at) for p in positions]
    changed = (torch.tensor([i[0] for i in idx]), torch.tensor([i[1] for i in idx]))
    reuse = tuple(t[[0] * len(changed_at), start:].clone() for t in (q, k, v)) + (changed,)
    at = torch.tensor([7, 0, 3, 5]) if last else None
    got = block_suffix(block, w, x[:, start:], k[:, :start], v[:, :start], query_at=at, reuse=reuse, fused=fused)
    if last:
        want = want[torch.arange(4), at][:, None]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # Without the reuse (every position projected) the same numbers come out.
    plain = block_suffix(block, w, x[:, start:], k[:, :start], v[:, :start], query_at=at, fused=fused)
    torch.testing.assert_close(plain, want, atol=1e-5, rtol=0)


def _prompts(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return [PromptInput(i, f"p{i}", [0] + torch.randint(1, D_VOCAB, (n,), generator=g).tolist()) for i, n in enumerate(lengths)]


def _active(result, n_layers):
    acts, read = result.tables["activations"], result.n_tokens - 1
    out: dict[tuple[int, int], list[int]] = {}
    for layer, pos, feat in zip(acts["layer"].tolist(), acts["position"].tolist(), acts["feature"].tolist(), strict=True):
        if 1 <= pos <= read and layer != n_layers:
            out.setdefault((layer, feat), []).append(pos)
    return out


@pytest.mark.parametrize("batch_size", [1, 7, 10_000])
def test_sweep_with_inactive_position_reuse_matches_the_reference(model, batch_size):
    """Denser SAEs, so features fire at several positions, with gaps, and some at one position only;
    prompts of mixed lengths share batches (and a batch mixes prompts, so prefixes are gathered)."""
    tokens = syn.random_tokens(24, 12, D_VOCAB, bos=0, seed=4)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]
    sites = build_sites(model, hooks, d_sae=48, density=0.3, tokens=tokens)
    prompts = _prompts([5, 11, 14, 14], seed=5)
    sweeper = Sweeper(model, sites, SweepConfig(batch_size=batch_size, **DENSE), prepend_bos=True)
    assert sweeper.suffix_reuse
    results = sweeper.sweep_many(prompts)
    shapes = {"gaps": 0, "one position": 0}
    for p, result in zip(prompts, results, strict=True):
        for positions in _active(result, model.cfg.n_layers).values():
            positions = sorted(positions)
            shapes["gaps"] += positions[-1] - positions[0] + 1 > len(positions)
            shapes["one position"] += len(positions) == 1
        _compare(result, reference_sweep(model, sites, p.token_ids, 0.0, prepend_bos=True), sites)
    assert shapes["gaps"] >= 10 and shapes["one position"] >= 10, shapes


def _padding(first, read, lo, hi):
    start, stop = first[lo], max(read[lo:hi]) + 1
    useful = sum(r - f + 1 for f, r in zip(first[lo:hi], read[lo:hi], strict=True))
    return 1.0 - useful / ((hi - lo) * (stop - start))


@pytest.mark.parametrize("max_padding", [0.0, 0.02, 0.2, 1.0])
@pytest.mark.parametrize("seed", range(6))
def test_grouping_cuts_at_group_boundaries_within_the_padding_budget(max_padding, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(rng.randint(1, 300)):
        read = rng.choice([9, 15, 15, 15, 16, 30])
        rows.append((rng.randint(1, read), read, rng.randint(0, 3), rng.randint(1, 4)))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    first, read, prompt, n_changed = (list(c) for c in zip(*rows, strict=True))
    bs = rng.choice([1, 5, 64])
    batches = plan_batches(first, read, prompt, n_changed, bs, max_padding)
    assert [b.lo for b in batches] == [0] + [b.hi for b in batches[:-1]] and batches[-1].hi == len(rows)
    for b in batches:
        assert 1 <= b.hi - b.lo <= bs
        assert (b.start, b.stop) == (first[b.lo], max(read[b.lo : b.hi]) + 1)
        assert b.n_changed == sum(n_changed[b.lo : b.hi])
        assert b.prompt == (prompt[b.lo] if len(set(prompt[b.lo : b.hi])) == 1 else None)
        assert _padding(first, read, b.lo, b.hi) <= max_padding + 1e-12
        if b.hi < len(rows) and b.hi - b.lo < bs:  # cut short: at a group boundary, the next group over budget
            key = (first[b.hi], read[b.hi])
            assert key != (first[b.hi - 1], read[b.hi - 1])
            nxt = b.hi
            while nxt < min(b.lo + bs, len(rows)) and (first[nxt], read[nxt]) == key:
                nxt += 1
            assert _padding(first, read, b.lo, nxt) > max_padding
    if max_padding == 1.0:
        assert all(b.hi - b.lo == bs for b in batches[:-1]), "no budget: plain full batches"
    if max_padding == 0.0:
        assert all(len({(first[i], read[i]) for i in range(b.lo, b.hi)}) == 1 for b in batches)


def test_grouping_lowers_padding_of_a_real_sweep(model):
    """On a real prompt the default budget computes fewer positions than plain full batches, same numbers."""
    tokens = syn.random_tokens(24, 12, D_VOCAB, bos=0, seed=4)
    sites = build_sites(model, ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"], d_sae=64, density=0.1, tokens=tokens)
    (prompt,) = _prompts([14], seed=8)
    runs = {}
    for budget in (1.0, None):
        sweeper = Sweeper(model, sites, SweepConfig(batch_size=16, **DENSE), prepend_bos=True)
        if budget is not None:
            sweeper.max_padding = budget
        runs[budget] = (sweeper.sweep(prompt), sweeper.flops)
    assert runs[None][1] < runs[1.0][1]
    for result, _ in runs.values():
        _compare(result, reference_sweep(model, sites, prompt.token_ids, 0.0, prepend_bos=True), sites)
