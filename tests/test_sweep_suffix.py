"""Suffix-only recompute (ingest/suffix.py): prefix reuse, the suffix grouping and the FLOP cost model.

Correctness is against the plain reference (one full forward per feature, transformer_lens hooks)
to 1e-5; the cost model is against torch.profiler's own FLOP count of the matrix products.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import build_sites
from test_sweep_reference import D_VOCAB, _compare

from featuregraph.ingest import cost
from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.reference import reference_sweep
from featuregraph.ingest.suffix import supports_suffix
from featuregraph.ingest.sweep import PromptInput, Sweeper

DENSE = dict(edge_top_k=10_000, edge_floor=0.0, logit_top_k=D_VOCAB // 2)
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


@pytest.fixture(scope="module")
def model_and_sites():
    model = syn.make_model(n_layers=3, d_model=32, d_vocab=D_VOCAB, n_ctx=24, seed=5)
    tokens = syn.random_tokens(24, 12, D_VOCAB, bos=0, seed=2)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre", "blocks.2.hook_resid_post"]
    # Sparse features, so that many first fire late in the prompt (long reused prefixes).
    return model, build_sites(model, hooks, d_sae=64, density=0.04, tokens=tokens)


def _prompts(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    return [PromptInput(i, f"p{i}", [0] + torch.randint(1, D_VOCAB, (n,), generator=g).tolist()) for i, n in enumerate(lengths)]


def _active_positions(result, n_layers: int) -> dict[tuple[int, int], list[int]]:
    """Each ablated feature's ablatable active positions, ascending, from the stored activations."""
    acts, read = result.tables["activations"], result.n_tokens - 1
    out: dict[tuple[int, int], list[int]] = {}
    for layer, pos, feat in zip(acts["layer"].tolist(), acts["position"].tolist(), acts["feature"].tolist(), strict=False):
        if 1 <= pos <= read and (layer != n_layers or pos == read):
            out.setdefault((layer, feat), []).append(pos)
    return {key: sorted(v) for key, v in out.items()}


def _first_positions(result, n_layers: int) -> dict[tuple[int, int], int]:
    """Each ablated feature's first ablatable active position."""
    return {key: v[0] for key, v in _active_positions(result, n_layers).items()}


@pytest.mark.parametrize("batch_size", [1, 4, 10_000])
def test_features_starting_late_reuse_the_prefix_and_match_the_reference(model_and_sites, batch_size):
    model, sites = model_and_sites
    sweeper = Sweeper(model, sites, SweepConfig(batch_size=batch_size, **DENSE), prepend_bos=True)
    assert sweeper.suffix_reuse
    (prompt,) = _prompts([14], seed=3)
    result = sweeper.sweep(prompt)
    starts = set(_first_positions(result, model.cfg.n_layers).values())
    assert len(starts) >= 5 and max(starts) >= 8, starts  # the reuse is exercised, not just start 1
    _compare(result, reference_sweep(model, sites, prompt.token_ids, 0.0, prepend_bos=True), sites)


def test_mixed_lengths_share_suffix_batches_and_match_the_reference(model_and_sites):
    model, sites = model_and_sites
    prompts = _prompts([3, 8, 12, 15], seed=4)
    config = SweepConfig(batch_size=6, coefficient=0.5, **DENSE)
    results = Sweeper(model, sites, config, prepend_bos=True).sweep_many(prompts)
    for p, result in zip(prompts, results, strict=False):
        _compare(result, reference_sweep(model, sites, p.token_ids, 0.5, prepend_bos=True), sites)


def test_suffix_batches_are_sorted_dense_and_cover_their_rows(model_and_sites, monkeypatch):
    """The grouping: ablations sorted by first position then read position, batch_size per batch;
    a batch starts at its rows' smallest first position and ends at their largest read position."""
    model, sites = model_and_sites
    prompts = _prompts([5, 9, 13], seed=6)
    bs = 5
    sweeper = Sweeper(model, sites, SweepConfig(batch_size=bs), prepend_bos=True)
    calls = []
    real = sweeper.ablate_suffix

    def spy(clean, k, prompt_idx, features, removed, scale, start, plan=None):
        calls.append((k, prompt_idx.tolist(), features.tolist(), removed.shape[1], start))
        return real(clean, k, prompt_idx, features, removed, scale, start, plan)

    monkeypatch.setattr(sweeper, "ablate_suffix", spy)
    sweeper.max_padding = 1.0  # plain full batches (the padding rule has its own test below)
    results = sweeper.sweep_many(prompts)
    firsts = [_first_positions(r, model.cfg.n_layers) for r in results]
    reads = [len(p.token_ids) - 1 for p in prompts]
    seen = []
    for k, pb, fb, width, start in calls:
        layer = sites[k].layer
        rows_first = [firsts[p][(layer, f)] for p, f in zip(pb, fb, strict=False)]
        assert start == min(rows_first), "a batch starts where its earliest feature does"
        assert start + width - 1 == max(reads[p] for p in pb), "and ends at its last read position"
        seen.extend((k, first, reads[p]) for first, p in zip(rows_first, pb, strict=False))
        seen_rows = len(pb)
        assert 1 <= seen_rows <= bs
    for k in range(len(sites)):
        keys = [(f, r) for kk, f, r in seen if kk == k]
        assert keys == sorted(keys), "sorted by (first position, read position) within a site"
        n_abl = sum(int((r.tables["ablations"]["layer"] == sites[k].layer).sum()) for r in results)
        assert len(keys) == n_abl
        assert [len(pb) for kk, pb, *_ in calls if kk == k][:-1] == [bs] * (-(-n_abl // bs) - 1), "dense batches"
    assert any(start > 1 for *_, start in calls)


def test_suffix_reuse_on_and_off_agree_and_cost_less(model_and_sites):
    model, sites = model_and_sites
    prompts = _prompts([6, 15], seed=8)
    on = Sweeper(model, sites, SweepConfig(batch_size=8, **DENSE), True)
    off = Sweeper(model, sites, SweepConfig(batch_size=8, **DENSE), True, suffix_reuse=False)
    for a, b in zip(on.sweep_many(prompts), off.sweep_many(prompts), strict=False):
        for table, values in (("edges", ("weight",)), ("logit_effects", ("dlogp", "dprob")), ("ablations", ())):
            ma, mb = _keyed(a.tables[table], values), _keyed(b.tables[table], values)
            if not values:
                assert ma.keys() == mb.keys()
            for key in ma.keys() | mb.keys():
                va, vb = ma.get(key, (0.0,) * len(values)), mb.get(key, (0.0,) * len(values))
                if key in ma and key in mb:
                    assert max((abs(x - y) for x, y in zip(va, vb, strict=False)), default=0.0) <= 1e-5, (table, key, va, vb)
                else:  # kept by one run only: a near-tie of the ranked value (weight, or dprob) at ~0
                    assert abs(va[-1] - vb[-1]) <= 1e-5, (table, key, va, vb)
    assert off.flops > 1.5 * on.flops


def _keyed(cols, values):
    """``{identifying columns: values}`` of a result table."""
    keys = [c for c in cols if c not in values]
    return {tuple(cols[c][i].item() for c in keys): tuple(float(cols[v][i]) for v in values) for i in range(len(cols[keys[0]]))}


def test_cost_model_equals_the_profilers_matmul_count(model_and_sites):
    from torch.profiler import ProfilerActivity, profile

    model, sites = model_and_sites
    prompts = _prompts([4, 9, 15], seed=9)
    for reuse in (True, False):
        sweeper = Sweeper(model, sites, SweepConfig(batch_size=7), True, suffix_reuse=reuse)
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            sweeper.sweep_many(prompts)
        counted = sum(e.flops for e in prof.events() if e.name in MATMULS and e.flops)
        assert counted > 0 and sweeper.flops == counted, (reuse, sweeper.flops, counted)


def test_per_ablation_cost_formulas_add_up(model_and_sites):
    """One prompt, batch size 1: the sweep's running count is the clean pass plus, per ablation, the
    closed-form suffix cost from its first position (what benchmarks report as 'after')."""
    model, sites = model_and_sites
    (prompt,) = _prompts([12], seed=10)
    sweeper = Sweeper(model, sites, SweepConfig(batch_size=1), True)
    result = sweeper.sweep(prompt)
    sh, n = sweeper.shape, len(prompt.token_ids)
    want = cost.clean_flops(sh, 1, n, [s.d_sae for s in sites], True)
    want += sum(cost.encode_flops(sh, n, s.d_sae) for s in sites)
    width = {s.layer: (sites[i + 1].d_sae if i + 1 < len(sites) else None) for i, s in enumerate(sites)}
    for (layer, _f), active in _active_positions(result, model.cfg.n_layers).items():
        want += cost.suffix_ablation_flops(sh, layer, active[0], n - 1, width[layer], n_changed=len(active))
    assert sweeper.flops == want


def test_unsupported_block_layouts_fall_back_to_full_recompute(model_and_sites):
    model, _ = model_and_sites
    assert supports_suffix(model.cfg)
    for change in (dict(positional_embedding_type="rotary"), dict(parallel_attn_mlp=True), dict(n_key_value_heads=2)):
        cfg = copy.copy(model.cfg)
        for key, value in change.items():
            setattr(cfg, key, value)
        assert not supports_suffix(cfg), change


@pytest.mark.parametrize("reuse", [True, False])
def test_planned_flops_equal_what_the_sweep_counts(model_and_sites, reuse):
    model, sites = model_and_sites
    prompts = _prompts([4, 9, 15], seed=12)
    planner = Sweeper(model, sites, SweepConfig(batch_size=5), True, suffix_reuse=reuse)
    planned = cost.planned_flops(planner, prompts)
    assert planner.flops == 0, "planning counts nothing"
    sweeper = Sweeper(model, sites, SweepConfig(batch_size=5), True, suffix_reuse=reuse)
    sweeper.sweep_many(prompts)
    assert planned == sweeper.flops
