"""DFA of attention-output SAE features: the identity, each term against one forward per term,
the stored top-k rows, and bad input (ingest/dfa.py; docs/method.md#direct-feature-attribution)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dfa_models import LAYER, attention_sae, resid_sae, sae_pre_activation, tiny_model, tokens

from featuregraph.errors import InputError, LoadError
from featuregraph.ingest import dfa
from featuregraph.ingest import synthetic as syn
from featuregraph.store.models import decode_feature

ARCHS = [("standard", False), ("jumprelu", False), ("topk", False), ("topk", True)]
NORMS = ["LN", "LNPre", "RMS"]
TOL = 1e-5


def _setup(norm="LN", arch="standard", rescale=False):
    model = tiny_model(norm)
    sae = attention_sae(model, arch, rescale=rescale)
    toks = tokens()
    cache = dfa.attention_cache(model, toks, LAYER)
    return model, sae, toks, cache, toks.shape[1] - 1


@pytest.mark.parametrize("arch,rescale", ARCHS)
def test_pre_activation_is_sae_lens_own_and_parts_sum_to_it(arch, rescale):
    model, sae, _, cache, read = _setup("LN", arch, rescale)
    found = dfa.attention_dfa(model, sae, cache, read)
    acts = sae.encode(cache.z[read].unsqueeze(0))[0]
    ref = sae_pre_activation(sae, cache.z[read])
    active = torch.nonzero(acts > 0).flatten().tolist()
    assert sorted(f.index for f in found) == sorted(active) and len(active) >= 3
    assert [f.activation for f in found] == sorted((f.activation for f in found), reverse=True)
    for f in found:
        assert f.pre_activation == pytest.approx(float(ref[f.index]), abs=TOL)
        # active: the activation function passes the pre-activation through
        assert f.activation == pytest.approx(f.pre_activation, abs=TOL)
        assert f.total == pytest.approx(f.pre_activation, abs=TOL)
        assert f.parts.shape == (model.cfg.n_heads, read + 1)
        assert abs(f.decoder_bias) > 1e-3 and abs(f.encoder_bias) > 1e-3  # both terms are exercised


@pytest.mark.parametrize("norm", NORMS)
def test_parts_sum_for_every_feature_asked_for_and_every_norm(norm):
    model, sae, _, cache, read = _setup(norm)
    for read_at in (read, 3):
        found = dfa.attention_dfa(model, sae, cache, read_at, features=range(sae.cfg.d_sae))
        ref = sae_pre_activation(sae, cache.z[read_at])
        assert len(found) == sae.cfg.d_sae
        for f in found:
            assert f.total == pytest.approx(float(ref[f.index]), abs=TOL)
            assert np.all(f.parts[:, read_at + 1 :] == 0)  # causal: no later source


def _pre_with(model, sae, toks, read, hooks):
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        _, cache = model.run_with_cache(
            toks, names_filter=[f"blocks.{LAYER}.attn.hook_z"], stop_at_layer=LAYER + 1
        )
    return sae_pre_activation(sae, cache[f"blocks.{LAYER}.attn.hook_z"][0, read])


def test_each_head_source_part_is_what_removing_that_value_removes():
    model, sae, toks, cache, read = _setup()
    found = dfa.attention_dfa(model, sae, cache, read)[:3]
    clean = sae_pre_activation(sae, cache.z[read])
    for h in range(model.cfg.n_heads):
        for s in range(read + 1):

            def drop(v, hook, h=h, s=s):
                v = v.clone()
                v[0, s, h] = 0.0
                return v

            pre = _pre_with(model, sae, toks, read, [(f"blocks.{LAYER}.attn.hook_v", drop)])
            for f in found:
                assert float(clean[f.index] - pre[f.index]) == pytest.approx(f.parts[h, s], abs=TOL)


@pytest.mark.parametrize("norm", NORMS)
def test_each_residual_term_is_one_forward_with_pattern_and_scale_frozen(norm):
    """The reference: per (head, source, piece), one forward in which that piece of the residual
    at the source is removed, block L's pattern and ln1 scale are patched to the clean run's and
    the other heads' values stay clean; the pre-activation drops by exactly the term."""
    model, sae, toks, cache, read = _setup(norm)
    rsae = resid_sae(model)
    f = dfa.attention_dfa(model, sae, cache, read)[0]
    pieces = dfa.resid_pieces(rsae, cache.resid)
    clean = sae_pre_activation(sae, cache.z[read])
    x = cache.resid
    acts = rsae.encode(x)
    # Plain formulas for a standard SAE: feature pieces, b_dec, error.
    recon = acts @ rsae.W_dec + rsae.b_dec
    n_checked = 0
    for h in range(model.cfg.n_heads):
        for s in (0, 2, read):
            split = dfa.resid_split(model, sae, cache, pieces, f, read, h, s)
            assert split.total == pytest.approx(f.parts[h, s], abs=TOL)
            active = torch.nonzero(acts[s] > 0).flatten().tolist()
            assert sorted(split.features.tolist()) == active
            want = {("feature", j): acts[s, j] * rsae.W_dec[j] for j in active}
            want[("error",)] = x[s] - recon[s]
            want[("decoder_bias",)] = rsae.b_dec
            got = {("feature", int(j)): v for j, v in zip(split.features, split.values, strict=True)}
            got[("error",)], got[("decoder_bias",)] = split.error, split.decoder_bias
            for key, piece in want.items():
                hooks = [
                    (f"blocks.{LAYER}.hook_resid_pre", lambda r, hook, s=s, p=piece: _minus_at(r, s, p)),
                    (f"blocks.{LAYER}.ln1.hook_scale", lambda t, hook: cache.scale.reshape(t.shape)),
                    (f"blocks.{LAYER}.attn.hook_pattern", lambda t, hook: cache.pattern.unsqueeze(0)),
                    (f"blocks.{LAYER}.attn.hook_v", lambda v, hook, h=h: _keep_head(v, cache.v, h)),
                ]
                pre = _pre_with(model, sae, toks, read, hooks)
                assert float(clean[f.index] - pre[f.index]) == pytest.approx(got[key], abs=TOL), (h, s, key)
                n_checked += 1
    assert n_checked > 40


def _minus_at(resid, s, piece):
    resid = resid.clone()
    resid[0, s] -= piece
    return resid


def _keep_head(v, clean_v, h):
    out = clean_v.unsqueeze(0).clone()
    out[:, :, h] = v[:, :, h]
    return out


def test_stored_rows_are_the_top_k_and_sum_with_their_remainders():
    model, sae, toks, cache, read = _setup()
    rsae = resid_sae(model)
    settings = dfa.DfaSettings(top_k=5, resid_top_k=3, recurse=2, max_features=4)
    rows = dfa.dfa_rows(model, sae, toks, read, settings, rsae, resid_layer=LAYER)
    feats, parts = rows["dfa_features"], rows["dfa_parts"]
    full = {f.index: f for f in dfa.attention_dfa(model, sae, cache, read)}
    assert len(feats["feature"]) == 4
    cols = list(parts)
    records = [dict(zip(cols, r, strict=True)) for r in zip(*parts.values(), strict=True)]
    for code, pre in zip(feats["feature"], feats["pre_activation"], strict=True):
        site, index = decode_feature(code)
        assert site == "attn_z" and pre == pytest.approx(full[index].pre_activation)
        mine = [r for r in records if r["feature"] == code]
        top = [r for r in mine if r["method"] == "dfa"]
        assert sum(r["value"] for r in top) == pytest.approx(pre, abs=TOL)
        stored = [r for r in top if r["term"] == "head_source"]
        assert len(stored) == 5
        brute = sorted(np.abs(full[index].parts).ravel(), reverse=True)[:5]
        assert sorted((abs(r["value"]) for r in stored), reverse=True) == pytest.approx(brute)
        for r in stored:
            assert r["value"] == pytest.approx(full[index].parts[r["head"], r["source_position"]], rel=1e-9)
        recursed = {(r["head"], r["source_position"]) for r in mine if r["method"] == "dfa_resid"}
        assert len(recursed) == 2
        for h, s in recursed:
            split = [
                r for r in mine if r["method"] == "dfa_resid" and (r["head"], r["source_position"]) == (h, s)
            ]
            assert sum(r["value"] for r in split) == pytest.approx(full[index].parts[h, s], abs=TOL)
            assert 1 <= sum(r["term"] == "feature" for r in split) <= 3
            assert all(r["up_layer"] == LAYER for r in split if r["term"] == "feature")
            assert {r["term"] for r in split} >= {"rest", "error", "decoder_bias", "bias"}


def test_without_a_residual_sae_only_the_head_source_split_is_stored():
    model, sae, toks, _, read = _setup()
    rows = dfa.dfa_rows(model, sae, toks, read, dfa.DfaSettings())
    assert set(rows["dfa_parts"]["method"]) == {"dfa"}
    assert set(rows["dfa_features"]["resid_layer"]) == {None}


def test_bad_input_is_one_line():
    model = tiny_model()
    resid = syn.make_sae(f"blocks.{LAYER}.hook_resid_pre", 32, 16, torch.randn(64, 32), 0.2)
    with pytest.raises(LoadError, match="attn.hook_z"):
        dfa.check_attention_sae(model, resid)
    sae = attention_sae(model)
    sae.cfg.normalize_activations = "layer_norm"
    with pytest.raises(LoadError, match="normalization"):
        dfa.check_attention_sae(model, sae)
    wide = tiny_model()
    wide.cfg.d_head = 16
    with pytest.raises(LoadError, match="d_in"):
        dfa.check_attention_sae(wide, attention_sae(model))
    for bad in ({"top_k": 0}, {"recurse": 17}):
        with pytest.raises(InputError):
            dfa.DfaSettings(**bad)
    model, sae, toks, cache, read = _setup()
    with pytest.raises(InputError, match="outside"):
        dfa.attention_dfa(model, sae, cache, read + 1)
    with pytest.raises(InputError, match="features must be"):
        dfa.attention_dfa(model, sae, cache, read, features=[sae.cfg.d_sae])


def test_a_topk_residual_sae_that_rescales_by_decoder_norm_splits_exactly():
    model, sae, _, cache, read = _setup()
    rsae = resid_sae(model, topk_rescaled=True)
    pieces = dfa.resid_pieces(rsae, cache.resid)
    assert max(len(pieces.at(s)[0]) for s in range(read + 1)) == 8  # at most k active (ReLU of the top k)
    for f in dfa.attention_dfa(model, sae, cache, read)[:3]:
        for h in range(model.cfg.n_heads):
            for s in range(read + 1):
                split = dfa.resid_split(model, sae, cache, pieces, f, read, h, s)
                assert split.total == pytest.approx(f.parts[h, s], abs=TOL)


def test_an_sae_that_takes_heads_flat_gets_the_same_split():
    model, sae, _, cache, read = _setup()
    flat = attention_sae(model, reshape="none")
    assert flat.cfg.reshape_activations == "none" and sae.cfg.reshape_activations == "hook_z"
    a, b = dfa.attention_dfa(model, sae, cache, read), dfa.attention_dfa(model, flat, cache, read)
    assert [f.index for f in a] == [f.index for f in b] and a
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.parts, y.parts) and x.pre_activation == y.pre_activation


def test_the_bias_term_is_what_zeroing_ln1_bias_and_the_value_bias_removes():
    """The constant of a residual split: one forward of a copy of the model whose ln1 bias and
    head h's value bias are zero, pattern and ln1 scale frozen, other heads' values clean."""
    import copy

    model, sae, toks, cache, read = _setup("LN")
    pieces = dfa.resid_pieces(resid_sae(model), cache.resid)
    f = dfa.attention_dfa(model, sae, cache, read)[0]
    for h in range(model.cfg.n_heads):
        bare = copy.deepcopy(model)
        with torch.no_grad():
            bare.blocks[LAYER].ln1.b.zero_()
            bare.blocks[LAYER].attn.b_V[h].zero_()
        for s in (0, read):
            hooks = [
                (f"blocks.{LAYER}.ln1.hook_scale", lambda t, hook: cache.scale.reshape(t.shape)),
                (f"blocks.{LAYER}.attn.hook_pattern", lambda t, hook, s=s: _only_source(cache.pattern, s)),
                (f"blocks.{LAYER}.attn.hook_v", lambda v, hook, h=h: _keep_head(v, cache.v, h)),
            ]
            # The pattern keeps only source s, so the change is head h's bias part from s alone.
            with_bias = _pre_with(model, sae, toks, read, hooks)
            without = _pre_with(bare, sae, toks, read, hooks)
            split = dfa.resid_split(model, sae, cache, pieces, f, read, h, s)
            assert abs(split.bias) > 1e-4
            assert float(with_bias[f.index] - without[f.index]) == pytest.approx(split.bias, abs=TOL)


def _only_source(pattern, s):
    out = torch.zeros_like(pattern).unsqueeze(0)
    out[0, :, :, s] = pattern[:, :, s]
    return out
