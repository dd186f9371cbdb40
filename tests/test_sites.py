"""Mixed SAE sites in one sweep (attention output hook_z, MLP output, transcoders, residual).

The reference is sae_lens' own HookedSAETransformer with every SAE attached (use_error_term=True)
and one hook on the ablated SAE's ``hook_sae_acts_post`` scaling the feature at its positions:
one forward per feature, every downstream SAE read off its own ``hook_sae_acts_post``. Edge
targets are written out by hand for the site layout below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.loading import SaeSite
from featuregraph.ingest.sites import site_of
from featuregraph.ingest.sweep import PromptInput, Sweeper
from featuregraph.store.models import SITE_SHORT, decode_feature

D_VOCAB, BOS = 64, 0
PROMPT = [BOS, 5, 17, 33, 2, 41, 9, 60, 12, 7]

# name -> (hook read, hook written by a transcoder or None)
LAYOUT = {
    "res0": ("blocks.0.hook_resid_pre", None),
    "att0": ("blocks.0.attn.hook_z", None),
    "tc0": ("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"),
    "res1": ("blocks.1.hook_resid_pre", None),
    "att1": ("blocks.1.attn.hook_z", None),
    "mlp1": ("blocks.1.hook_mlp_out", None),
    "res2": ("blocks.1.hook_resid_post", None),
}
# Edges of "each-kind": the next site of each kind (residual, attention, MLP/transcoder).
EACH_KIND = {
    "res0": ["att0", "tc0", "res1"],
    "att0": ["tc0", "res1", "att1"],
    "tc0": ["res1", "att1", "mlp1"],
    "res1": ["att1", "mlp1", "res2"],
    "att1": ["mlp1", "res2"],
    "mlp1": ["res2"],
    "res2": [],
}
FINAL = {"mlp1", "res2"}  # write the final residual: only the read position can matter


def _name(layer: int, feature: int) -> tuple[str, int]:
    kind, index = decode_feature(feature)
    return f"{SITE_SHORT[kind]}{layer}", index


@pytest.fixture(scope="module")
def mixed():
    """A tiny random 2-layer model and one SAE per site of LAYOUT (module scope, seeded)."""
    torch.manual_seed(0)
    model = syn.make_model(n_layers=2, d_model=32, n_heads=4, d_vocab=D_VOCAB, seed=3)
    calib = syn.random_tokens(16, 12, D_VOCAB, BOS, seed=1)
    saes = {}
    for i, (name, (hook, out)) in enumerate(LAYOUT.items()):
        x = syn.sample_residuals(model, hook, calib[:, 1:])
        if out is not None:
            saes[name] = syn.make_transcoder(hook, out, 32, 40, 32, x, 0.15, seed=10 + i)
        else:
            z = "hook_z" if hook.endswith("hook_z") else "none"
            saes[name] = syn.make_sae(hook, 32, 40, x, 0.15, seed=10 + i, reshape_activations=z)
    return model, saes


def _sites(saes: dict, names: list[str]) -> list[SaeSite]:
    sites = []
    for name in names:
        sae = saes[name]
        hook, out = LAYOUT[name]
        kind, layer = site_of(hook, out, out is not None, name)
        sites.append(SaeSite(layer, hook, sae, {}, kind, out))
    return sorted(sites, key=lambda s: s.order)


def _acts_hook(name: str) -> str:
    hook, out = LAYOUT[name]
    return f"{out or hook}.hook_sae_acts_post"


@torch.no_grad()
def reference(model, saes: dict, names: list[str], targets: dict[str, list[str]], coefficient: float):
    """``{(site, feature): (weights {target: [d_sae]}, dlogp [vocab], dprob [vocab])}`` by sae_lens hooks."""
    tokens = torch.tensor([PROMPT])
    read, first = len(PROMPT) - 1, 1
    model.reset_saes()
    for name in names:
        model.add_sae(saes[name], use_error_term=True)
    try:
        logits, cache = model.run_with_cache(tokens, names_filter=[_acts_hook(n) for n in names])
        clean = {n: cache[_acts_hook(n)][0] for n in names}  # [pos, d_sae]
        clean_logp = torch.log_softmax(logits[0, read], -1)
        out = {}
        for name in names:
            positions = [read] if name in FINAL else list(range(first, read + 1))
            for f in range(clean[name].shape[1]):
                if not bool((clean[name][positions, f] != 0).any()):
                    continue

                def ablate(acts, hook, f=f, positions=positions):
                    acts = acts.clone()
                    acts[:, positions, f] *= coefficient
                    return acts

                seen: dict[str, torch.Tensor] = {}

                def capture(acts, hook, seen=seen):
                    seen[hook.name] = acts[0, read].clone()

                hooks = [(_acts_hook(name), ablate)] + [(_acts_hook(t), capture) for t in targets[name]]
                logp = torch.log_softmax(model.run_with_hooks(tokens, fwd_hooks=hooks)[0, read], -1)
                weights = {t: seen[_acts_hook(t)] - clean[t][read] for t in targets[name]}
                out[(name, f)] = (weights, logp - clean_logp, logp.exp() - clean_logp.exp())
        return out
    finally:
        model.reset_saes()


def _sweep(model, sites, coefficient: float, suffix_reuse: bool = True, **cfg) -> dict:
    config = SweepConfig(
        coefficient=coefficient, edge_top_k=1000, edge_floor=0.0, logit_top_k=D_VOCAB // 2, **cfg
    )
    sweeper = Sweeper(model, sites, config, prepend_bos=True, suffix_reuse=suffix_reuse)
    assert sweeper.general and sweeper.suffix_reuse == suffix_reuse
    return sweeper.sweep(PromptInput(0, "p", PROMPT)).tables


def _check_against_reference(tables: dict, ref: dict) -> int:
    abl = tables["ablations"]
    got_ablations = {_name(int(layer), int(f)) for layer, f in zip(abl["layer"], abl["feature"], strict=True)}
    assert got_ablations == set(ref)
    e = tables["edges"]
    edges = {}
    for ul, uf, dl, df, w in zip(
        e["up_layer"], e["up_feature"], e["down_layer"], e["down_feature"], e["weight"], strict=True
    ):
        edges[(_name(int(ul), int(uf)), _name(int(dl), int(df)))] = float(w)
    n = 0
    for up, (weights, _, _) in ref.items():
        for target, w in weights.items():
            for j in range(w.shape[0]):
                assert edges.pop((up, (target, j)), 0.0) == pytest.approx(float(w[j]), abs=1e-5), (
                    up,
                    target,
                    j,
                )
                n += 1
    assert edges == {}  # nothing stored that the reference does not have
    lg = tables["logit_effects"]
    for layer, f, tok, dl, dp in zip(
        lg["layer"], lg["feature"], lg["token_id"], lg["dlogp"], lg["dprob"], strict=True
    ):
        _, ref_dlogp, ref_dprob = ref[_name(int(layer), int(f))]
        assert float(dl) == pytest.approx(float(ref_dlogp[tok]), abs=1e-5)
        assert float(dp) == pytest.approx(float(ref_dprob[tok]), abs=1e-5)
    return n


@pytest.mark.parametrize("coefficient,suffix_reuse", [(0.0, True), (0.0, False), (0.5, True)])
def test_mixed_sweep_equals_hooked_sae_transformer_reference(mixed, coefficient, suffix_reuse):
    model, saes = mixed
    names = list(LAYOUT)
    ref = reference(model, saes, names, EACH_KIND, coefficient)
    assert {name for name, _ in ref} == set(names)  # every kind of site has ablations
    n = _check_against_reference(_sweep(model, _sites(saes, names), coefficient, suffix_reuse), ref)
    assert n > 1000


@pytest.mark.parametrize("name", ["att0", "att1", "mlp1", "tc0"])
def test_single_site_ablation_equals_reference(mixed, name):
    """One non-residual site with the residual SAE after it: its logit effects and edges."""
    model, saes = mixed
    after = {"att0": "res1", "att1": "res2", "mlp1": "res2", "tc0": "res1"}[name]
    names = [name, after]
    ref = reference(model, saes, names, {name: [after], after: []}, 0.0)
    assert any(site == name for site, _ in ref)
    _check_against_reference(_sweep(model, _sites(saes, names), 0.0), ref)


def test_named_edge_target(mixed):
    model, saes = mixed
    names = ["res0", "att0", "res1", "att1"]
    targets = {"res0": ["att1"], "att0": ["att1"], "res1": ["att1"], "att1": []}
    ref = reference(model, saes, names, targets, 0.0)
    _check_against_reference(_sweep(model, _sites(saes, names), 0.0, edge_target="blocks.1.attn.hook_z"), ref)


def test_stored_feature_ids_carry_the_site(mixed):
    model, saes = mixed
    tables = _sweep(model, _sites(saes, list(LAYOUT)), 0.0)
    codes = {int(f) >> 28 for f in tables["activations"]["feature"]}
    assert codes == {0, 1, 2, 3}
    acts = tables["activations"]
    att = [
        (int(p), int(f) - (1 << 28))
        for layer, p, f in zip(acts["layer"], acts["position"], acts["feature"], strict=True)
        if int(f) >> 28 == 1 and layer == 0
    ]
    z = model.run_with_cache(torch.tensor([PROMPT]), names_filter=["blocks.0.attn.hook_z"])[1][
        "blocks.0.attn.hook_z"
    ][0]
    dense = saes["att0"].encode(z)  # sae_lens' own hook_z encode: [pos, n_heads, d_head] in
    assert sorted(att) == sorted((int(p), int(f)) for p, f in dense.nonzero())


def test_residual_only_runs_keep_the_fast_path(mixed):
    """Residual SAEs alone take the fast path; forced onto the general path they give the same tables."""
    model, saes = mixed
    sites = _sites(saes, ["res0", "res1", "res2"])
    config = SweepConfig(edge_top_k=1000, edge_floor=0.0, logit_top_k=D_VOCAB // 2)
    fast = Sweeper(model, sites, config, prepend_bos=True)
    assert not fast.general and fast.suffix_reuse
    general = Sweeper(model, sites, config, prepend_bos=True)
    general.general = True
    a, b = (sw.sweep(PromptInput(0, "p", PROMPT)).tables for sw in (fast, general))
    for name in ("activations", "ablations", "edges", "logit_effects"):
        # Rows in key order: the paths' float rounding differs (fused kernels on the fast path),
        # which may swap the rank order of equal-sized effects.
        keys = [c for c in a[name] if np.issubdtype(np.asarray(a[name][c]).dtype, np.integer)]
        oa, ob = (np.lexsort([np.asarray(t[name][c]) for c in reversed(keys)]) for t in (a, b))
        for col in a[name]:
            assert np.asarray(a[name][col])[oa] == pytest.approx(np.asarray(b[name][col])[ob], abs=1e-5), (name, col)
    assert len(a["edges"]["weight"]) > 50


def test_transcoder_reading_hook_mlp_in(mixed, monkeypatch):
    """A transcoder reading ``hook_mlp_in`` (the un-normalized MLP input; transformer_lens calls the
    hook only when asked to) against the reference, with the residual SAE after it."""
    model, saes = mixed
    calib = syn.random_tokens(16, 12, D_VOCAB, BOS, seed=1)
    model.set_use_hook_mlp_in(True)
    try:
        x = syn.sample_residuals(model, "blocks.0.hook_mlp_in", calib[:, 1:])
        tc = syn.make_transcoder("blocks.0.hook_mlp_in", "blocks.0.hook_mlp_out", 32, 40, 32, x, 0.15, seed=5)
        monkeypatch.setitem(LAYOUT, "tc0", ("blocks.0.hook_mlp_in", "blocks.0.hook_mlp_out"))
        saes = {**saes, "tc0": tc}
        names = ["tc0", "res1"]
        ref = reference(model, saes, names, {"tc0": ["res1"], "res1": []}, 0.0)
        assert any(site == "tc0" for site, _ in ref)
        sites = _sites(saes, names)
        assert sites[0].site_kind == "transcoder" and sites[0].hook_name == "blocks.0.hook_mlp_in"
        _check_against_reference(_sweep(model, sites, 0.0), ref)
    finally:
        model.set_use_hook_mlp_in(False)


def test_hook_z_sae_without_sae_lens_reshaping(mixed):
    """An SAE at hook_z whose config does not ask sae_lens to flatten heads gets them flattened the
    same way: the same weights give the same tables as the reshaping SAE."""
    model, saes = mixed
    flat = syn.make_sae("blocks.0.attn.hook_z", 32, 40, torch.randn(64, 32), 0.15)
    flat.load_state_dict(saes["att0"].state_dict())
    assert not flat.hook_z_reshaping_mode and saes["att0"].hook_z_reshaping_mode
    a = _sweep(model, _sites(saes, ["att0", "res1"]), 0.0)
    b = _sweep(model, _sites({**saes, "att0": flat}, ["att0", "res1"]), 0.0)
    for name in ("activations", "ablations", "edges", "logit_effects"):
        for col in a[name]:
            assert a[name][col] == pytest.approx(b[name][col], abs=1e-6), (name, col)
    assert len(a["edges"]["weight"]) > 10


def test_prompts_of_different_lengths_share_forwards(mixed):
    """Right-padded prompt groups on the general path: each prompt gets what it gets alone."""
    model, saes = mixed
    sites = _sites(saes, list(LAYOUT))
    config = SweepConfig(edge_top_k=1000, edge_floor=0.0, logit_top_k=D_VOCAB // 2, batch_size=16)
    prompts = [
        PromptInput(0, "a", PROMPT),
        PromptInput(1, "b", PROMPT[:4]),
        PromptInput(2, "c", [BOS, 3, 50, 8, 22, 19]),
    ]
    together = Sweeper(model, sites, config, prepend_bos=True).sweep_many(prompts)
    for p, got in zip(prompts, together, strict=True):
        alone = Sweeper(model, sites, config, prepend_bos=True).sweep(p)
        for name in ("activations", "ablations", "edges", "logit_effects"):
            a, b = _keyed(alone.tables[name]), _keyed(got.tables[name])
            if name in ("activations", "ablations"):
                assert a.keys() == b.keys(), (p.prompt_id, name)
            # An edge at float-rounding level (|weight| ~ 1e-7) may be kept in one and not the other.
            for key in a.keys() | b.keys():
                zero = [0.0] * len(next(iter(a.values())))
                assert a.get(key, zero) == pytest.approx(b.get(key, zero), abs=1e-5), (p.prompt_id, name, key)
        assert len(alone.tables["edges"]["weight"]) > 0


def _keyed(cols: dict) -> dict[tuple, list[float]]:
    """A result table as {integer columns: float columns} per row."""
    ints = [c for c, v in cols.items() if v.dtype.kind in "iu"]
    floats = [c for c in cols if c not in ints]
    n = len(next(iter(cols.values())))
    return {tuple(int(cols[c][i]) for c in ints): [float(cols[c][i]) for c in floats] for i in range(n)}
