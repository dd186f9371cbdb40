"""The batched sweep equals the plain reference (one full forward per feature) to 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import build_sites

from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.reference import reference_sweep
from featuregraph.ingest.sweep import PromptInput, Sweeper

ATOL = 1e-5
D_VOCAB = 64


def _dense_edges(result, sites) -> dict[tuple[int, int], np.ndarray]:
    """Kept edges as dense rows per upstream feature (unkept entries 0)."""
    width = {s.layer: s.d_sae for s in sites}
    e = result.tables["edges"]
    rows: dict[tuple[int, int], np.ndarray] = {}
    for ul, uf, dl, df, w in zip(e["up_layer"], e["up_feature"], e["down_layer"], e["down_feature"], e["weight"]):
        row = rows.setdefault((int(ul), int(uf)), np.zeros(width[int(dl)], np.float64))
        row[int(df)] = w
    return rows


def _compare(result, ref, sites) -> None:
    abl = result.tables["ablations"]
    swept = set(zip(abl["layer"].tolist(), abl["feature"].tolist()))
    assert swept <= set(ref)
    for key in set(ref) - swept:
        # Skipped only when the effect is provably nil: the last site, active off the read position.
        assert key[0] == max(s.layer for s in sites) and float(ref[key].dprob.abs().max()) == 0.0
    ref = {k: v for k, v in ref.items() if k in swept}
    dense = _dense_edges(result, sites)
    n_checked = 0
    for key, r in ref.items():
        if r.weights is None:
            assert key not in dense, "the last site has no next SAE, so no edges"
            continue
        got = dense.get(key, np.zeros(r.weights.numel()))
        np.testing.assert_allclose(got, r.weights.double().numpy(), atol=ATOL, rtol=0)
        n_checked += 1
    le = result.tables["logit_effects"]
    per_ablation: dict[tuple[int, int], int] = {}
    for layer, feat, tok, dlogp, dprob in zip(le["layer"], le["feature"], le["token_id"], le["dlogp"], le["dprob"]):
        r = ref[(int(layer), int(feat))]
        assert abs(float(r.dlogp[tok]) - dlogp) <= ATOL
        assert abs(float(r.dprob[tok]) - dprob) <= ATOL
        per_ablation[(int(layer), int(feat))] = per_ablation.get((int(layer), int(feat)), 0) + 1
    assert all(per_ablation[k] == D_VOCAB for k in ref), "top V/2 promoted + V/2 suppressed per ablation"
    assert n_checked > 0


@pytest.fixture(scope="module")
def model_and_sites():
    model = syn.make_model(n_layers=3, d_model=32, d_vocab=D_VOCAB, n_ctx=24, seed=3)
    tokens = syn.random_tokens(24, 12, D_VOCAB, bos=0, seed=1)
    hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre", "blocks.2.hook_resid_post"]
    return model, build_sites(model, hooks, d_sae=48, density=0.08, tokens=tokens)


@pytest.mark.parametrize("coefficient", [0.0, 0.5])
@pytest.mark.parametrize("n_after_bos", [1, 2, 7, 15])
def test_sweep_matches_reference(model_and_sites, coefficient, n_after_bos):
    model, sites = model_and_sites
    g = torch.Generator().manual_seed(n_after_bos)
    ids = [0] + torch.randint(1, D_VOCAB, (n_after_bos,), generator=g).tolist()
    config = SweepConfig(coefficient=coefficient, edge_top_k=10_000, edge_floor=0.0, logit_top_k=D_VOCAB // 2, batch_size=5)
    result = Sweeper(model, sites, config, prepend_bos=True).sweep(PromptInput(0, "p", ids))
    ref = reference_sweep(model, sites, ids, coefficient, prepend_bos=True)
    assert len(ref) > 0
    _compare(result, ref, sites)


def test_sweep_without_bos_and_with_non_adjacent_sites(model_and_sites):
    model, sites = model_and_sites
    skip = [sites[0], sites[2]]  # layers 0 -> 2: edges run through two blocks
    ids = [5, 9, 13, 2, 40]
    config = SweepConfig(edge_top_k=10_000, edge_floor=0.0, logit_top_k=D_VOCAB // 2)
    result = Sweeper(model, skip, config, prepend_bos=False).sweep(PromptInput(0, "p", ids))
    ref = reference_sweep(model, skip, ids, 0.0, prepend_bos=False)
    assert {k[0] for k in ref} == {0, 2}
    assert set(result.tables["edges"]["down_layer"].tolist()) == {2}
    _compare(result, ref, skip)


def test_top_k_and_floor_keep_the_largest(model_and_sites):
    model, sites = model_and_sites
    ids = [0, 7, 21, 33, 4, 18, 60]
    k, floor = 3, 0.05
    result = Sweeper(model, sites, SweepConfig(edge_top_k=k, edge_floor=floor, logit_top_k=4), True).sweep(
        PromptInput(0, "p", ids)
    )
    ref = reference_sweep(model, sites, ids, 0.0, prepend_bos=True)
    e = result.tables["edges"]
    checked, cut_by_floor = 0, 0
    for key, r in ref.items():
        if r.weights is None:
            continue
        # Plain computation: the k largest |weight| of the dense reference, then those above the floor.
        # The sweep's numbers differ from the reference's by float rounding, so a near-tie at the
        # k-th place (within ATOL) may go either way: those form a band the rest of the top k
        # comes from; everything clearly larger must be kept, nothing else may be.
        mags = sorted(((abs(float(w)), j) for j, w in enumerate(r.weights.tolist())), reverse=True)
        kth = mags[k - 1][0]
        above = {j for m, j in mags if m > kth + ATOL}
        band = {j for m, j in mags if abs(m - kth) <= ATOL}
        assert all(abs(m - floor) > ATOL for m, _ in mags[: k + len(band)]), key  # no near-tie at the floor
        sel = (e["up_layer"] == key[0]) & (e["up_feature"] == key[1])
        got = e["down_feature"][sel].tolist()
        assert len(got) == len(set(got))
        got = set(got)
        if kth > floor:
            assert above <= got and got - above <= band and len(got) == k, (key, sorted(got))
        else:
            assert got == {j for m, j in mags if m > floor}, (key, sorted(got))
        checked += 1
        cut_by_floor += len(got) < k
    assert checked >= 5 and 0 < cut_by_floor < checked, (checked, cut_by_floor)  # both cuts are exercised
    le = result.tables["logit_effects"]
    for key, r in ref.items():
        sel = (le["layer"] == key[0]) & (le["feature"] == key[1])
        toks = le["token_id"][sel]
        if key not in {(int(a), int(b)) for a, b in zip(result.tables["ablations"]["layer"], result.tables["ablations"]["feature"])}:
            assert float(r.dprob.abs().max()) == 0.0
            continue
        assert len(toks) == 8  # 4 promoted, then 4 suppressed
        kth_high = r.dprob.topk(4).values[-1].item()
        kth_low = (-r.dprob).topk(4).values[-1].item()
        assert all(r.dprob[t].item() >= kth_high - ATOL for t in toks[:4])
        assert all(-r.dprob[t].item() >= kth_low - ATOL for t in toks[4:])


def test_inactive_features_cost_nothing(model_and_sites):
    """Only features active at an ablated position (not BOS) are ablated."""
    model, sites = model_and_sites
    ids = [0, 11, 12]
    result = Sweeper(model, sites, SweepConfig(), True).sweep(PromptInput(0, "p", ids))
    acts = result.tables["activations"]
    last = max(s.layer for s in sites)
    active = {
        (int(l), int(f))
        for l, p, f in zip(acts["layer"], acts["position"], acts["feature"])
        if p >= 1 and (l != last or p == len(ids) - 1)  # no block after the last site: only the read position counts
    }
    abl = result.tables["ablations"]
    assert set(zip(abl["layer"].tolist(), abl["feature"].tolist())) == active
    assert (abl["n_positions"] >= 1).all()


def test_prompts_of_different_lengths_swept_together_match_the_reference(model_and_sites):
    """Right-padding is invisible: each prompt of a mixed-length group gets its own answer."""
    model, sites = model_and_sites
    g = torch.Generator().manual_seed(11)
    prompts = [
        PromptInput(i, f"p{i}", [0] + torch.randint(1, D_VOCAB, (n,), generator=g).tolist())
        for i, n in enumerate([1, 4, 9, 15])
    ]
    config = SweepConfig(edge_top_k=10_000, edge_floor=0.0, logit_top_k=D_VOCAB // 2, batch_size=7)
    results = Sweeper(model, sites, config, prepend_bos=True).sweep_many(prompts)
    assert [r.prompt_id for r in results] == [0, 1, 2, 3]
    for p, result in zip(prompts, results):
        assert result.n_tokens == len(p.token_ids)
        assert result.tables["activations"]["position"].max() < len(p.token_ids)
        _compare(result, reference_sweep(model, sites, p.token_ids, 0.0, prepend_bos=True), sites)


def test_joint_ablation_matches_hooks_and_single_ablation(model_and_sites):
    from featuregraph.ingest.reference import reference_joint_ablation

    model, sites = model_and_sites
    ids = [0, 7, 21, 33, 4, 18, 60, 9]
    sweeper = Sweeper(model, sites, SweepConfig(batch_size=3), prepend_bos=True)
    clean = sweeper.clean_pass([PromptInput(0, "p", ids)])
    result = sweeper.sweep(PromptInput(0, "p", ids))
    abl = result.tables["ablations"]
    by_layer: dict[int, list[int]] = {}
    for layer, feat in zip(abl["layer"].tolist(), abl["feature"].tolist()):
        by_layer.setdefault(layer, []).append(feat)
    index = {s.layer: k for k, s in enumerate(sites)}
    # A path: one active feature per site; also two features at one site.
    path = [(layer, feats[0]) for layer, feats in sorted(by_layer.items())]
    pair = [(layer, f) for layer, feats in list(sorted(by_layer.items()))[:1] for f in feats[:2]]
    for feats, c in ((path, 0.0), (path, 0.5), (pair, 0.0)):
        sets = [{index[layer]: [f for l2, f in feats if l2 == layer] for layer, _ in feats}]
        got = sweeper.ablate_sets(clean, torch.tensor([0]), sets, c)[0]
        want = reference_joint_ablation(model, sites, ids, feats, c, prepend_bos=True)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # One feature alone: the same numbers as the sweep's own ablation.
    layer, feat = path[0]
    logp = sweeper.ablate_sets(clean, torch.tensor([0]), [{index[layer]: [feat]}], 0.0)[0]
    le = result.tables["logit_effects"]
    sel = (le["layer"] == layer) & (le["feature"] == feat)
    dlogp = (logp - clean.logp[0]).numpy()
    np.testing.assert_allclose(dlogp[le["token_id"][sel]], le["dlogp"][sel], atol=ATOL)
