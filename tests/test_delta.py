"""Low-precision delta mode (ingest/delta.py) against the plain float32 reference.

In float32 arithmetic the delta propagation must reproduce the reference (one full forward per
feature through transformer_lens hooks) to 1e-5: the check that it is exact. In bfloat16/float16
it must stay within the documented tolerance, and far closer than computing every forward pass
in low precision.
"""

from __future__ import annotations

import pytest
import torch
from helpers import build_sites
from test_sweep_reference import D_VOCAB, _compare
from test_sweep_suffix import DENSE, _first_positions, _prompts

from featuregraph.errors import InputError
from featuregraph.ingest import synthetic as syn
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.delta import make_sweeper, run_precision, with_delta
from featuregraph.ingest.precision import cast, compare, within_tolerance
from featuregraph.ingest.reference import reference_sweep
from featuregraph.ingest.sweep import Sweeper
from featuregraph.store.run_config import upgrade_config

HOOKS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre", "blocks.2.hook_resid_post"]


@pytest.fixture(scope="module")
def model_and_sites():
    model = syn.make_model(n_layers=3, d_model=32, d_vocab=D_VOCAB, n_ctx=24, seed=5)
    tokens = syn.random_tokens(24, 12, D_VOCAB, bos=0, seed=2)
    return model, build_sites(model, HOOKS, d_sae=64, density=0.04, tokens=tokens)


def _counting(sweeper):
    """``sweeper`` with its delta ablations counted (so a test knows delta mode really ran)."""
    calls = []
    real = sweeper.delta.ablate

    def spy(*a, **kw):
        calls.append(a[3].shape[0])
        return real(*a, **kw)

    sweeper.delta.ablate = spy
    return sweeper, calls


@pytest.mark.parametrize("batch_size", [1, 5, 10_000])
def test_delta_mode_in_float32_matches_the_reference(model_and_sites, batch_size):
    model, sites = model_and_sites
    sweeper, calls = _counting(with_delta(Sweeper(model, sites, SweepConfig(batch_size=batch_size, coefficient=0.5, **DENSE), True), "float32"))
    prompts = _prompts([3, 8, 14, 15], seed=3)
    results = sweeper.sweep_many(prompts)
    assert sum(calls) == sum(r.n_ablations for r in results) > 0
    starts = {p for r in results for p in _first_positions(r, model.cfg.n_layers).values()}
    assert len(starts) >= 5 and max(starts) >= 8, starts  # features starting late: prefix reuse exercised
    for p, result in zip(prompts, results, strict=True):
        _compare(result, reference_sweep(model, sites, p.token_ids, 0.5, prepend_bos=True), sites)


def test_delta_mode_costs_about_the_flops_of_the_suffix_path(model_and_sites):
    model, sites = model_and_sites
    prompts = _prompts([6, 13], seed=8)
    plain = Sweeper(model, sites, SweepConfig(batch_size=7), True)
    delta = with_delta(Sweeper(model, sites, SweepConfig(batch_size=7), True), "bfloat16")
    plain.sweep_many(prompts)
    delta.sweep_many(prompts)
    # The same batches and blocks; only the ablated block's reuse of unchanged positions (float32
    # suffix path) is not done in delta mode, which costs a few percent more.
    assert 0 < plain.flops < delta.flops < 1.2 * plain.flops


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_delta_mode_is_within_the_tolerance_and_beats_full_low_precision(model_and_sites, dtype):
    model, sites = model_and_sites
    config = SweepConfig(batch_size=6, **DENSE)
    prompts = _prompts([4, 9, 13, 15], seed=11)
    ref = Sweeper(model, sites, config, True).sweep_many(prompts)
    delta = compare(ref, with_delta(Sweeper(model, sites, config, True), dtype).sweep_many(prompts))
    assert within_tolerance(delta, dtype) == [], delta
    assert delta["edge_rel_median"] > 0 and delta["logit_rel_median"] > 0, "low precision did change the numbers"
    low_model, low_sites = cast(model, sites, dtype)
    full = compare(ref, Sweeper(low_model, low_sites, config, True).sweep_many(prompts))
    assert full["edge_rel_median"] > 10 * delta["edge_rel_median"], (full, delta)
    assert full["logit_rel_median"] > 10 * delta["logit_rel_median"], (full, delta)


def test_runs_delta_mode_cannot_serve_keep_full_low_precision(model_and_sites):
    model, sites = model_and_sites
    # Edges to one named site take the general path (ingest/mixed.py), which delta mode does not cover.
    named = SweepConfig(edge_target=HOOKS[3])
    with pytest.raises(InputError, match="delta mode does not support this sweep: mixed sites"):
        with_delta(Sweeper(model, sites, named, True), "bfloat16")
    with pytest.raises(InputError, match="delta mode does not support this sweep: a block layout"):
        with_delta(Sweeper(model, sites, SweepConfig(), True, suffix_reuse=False), "bfloat16")
    sweeper, precision = make_sweeper(model, sites, named, True, "bfloat16")
    assert precision == run_precision(model, sites, named, True, "bfloat16") == "bfloat16"
    assert sweeper.delta is None and next(sweeper.model.parameters()).dtype == torch.bfloat16
    sweeper, precision = make_sweeper(model, sites, SweepConfig(), True, "float16")
    assert precision == "delta-float16" and sweeper.delta is not None
    assert next(sweeper.model.parameters()).dtype == torch.float32, "the clean pass stays float32"
    assert make_sweeper(model, sites, SweepConfig(), True, "float32")[1] == "float32"


def test_the_recorded_config_says_which_precision_ran(tiny_assets, tmp_path):
    import json

    import duckdb
    from helpers import tiny_config

    from featuregraph.ingest.config import RunConfig
    from featuregraph.ingest.reload import load_run
    from featuregraph.ingest.run import ingest
    from featuregraph.store.db import open_database

    prompts = ["The quick brown fox", "When Mary and John went"]
    for dtype, precision in [("bfloat16", "delta-bfloat16"), ("float32", "float32")]:
        config = RunConfig(**{**tiny_config(tiny_assets, n_saes=2).__dict__, "dtype": dtype})
        db = tmp_path / f"{dtype}.duckdb"
        ingest(db, _raw(prompts), config, progress=False)
        with duckdb.connect(str(db), read_only=True) as con:
            stored, version, col = con.execute("SELECT config, config_version, dtype FROM runs").fetchone()
        stored = upgrade_config(json.loads(stored), version)
        assert (stored["precision"], stored["dtype"], col) == (precision, dtype, dtype)
        # Experiments reload the run as it was loaded (float32 for delta mode): its SAE hashes match.
        with open_database(db) as handle:
            assert next(load_run(handle, 1).loaded.model.parameters()).dtype == torch.float32
    # Older layouts computed every pass in their dtype.
    assert upgrade_config({"dtype": "bfloat16", "sweep": {}}, 4)["precision"] == "bfloat16"


def _raw(texts):
    from featuregraph.ingest.sources import RawPrompt

    return [RawPrompt(text=t, line=i + 1) for i, t in enumerate(texts)]



def _converted(site, kind: str):
    """``site`` with a TopK (k=3, optionally scaled by decoder norm) or JumpReLU SAE of the same weights."""
    from dataclasses import replace

    from sae_lens.saes.jumprelu_sae import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    old = site.sae
    shape = dict(d_in=old.cfg.d_in, d_sae=old.cfg.d_sae, metadata=old.cfg.metadata)
    if kind == "jumprelu":
        sae = JumpReLUSAE(JumpReLUSAEConfig(**shape))
    else:
        sae = TopKSAE(TopKSAEConfig(**shape, k=3, rescale_acts_by_decoder_norm=kind == "topk-rescaled"))
    sae.load_state_dict({**sae.state_dict(), **old.state_dict()})
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 1.5, old.cfg.d_sae)[:, None])  # norms that differ, so rescaling matters
        if kind == "jumprelu":
            sae.threshold.fill_(0.05)
            sae.b_enc.add_(0.05)  # so that features still fire above the threshold
    return replace(site, sae=sae)


@pytest.mark.parametrize("kind", ["topk", "topk-rescaled", "jumprelu"])
def test_delta_mode_with_topk_and_jumprelu_saes_matches_the_reference(model_and_sites, kind):
    model, sites = model_and_sites
    converted = [_converted(s, kind) for s in sites]
    sweeper = with_delta(Sweeper(model, converted, SweepConfig(batch_size=8, **DENSE), True), "float32")
    for p in _prompts([7, 12], seed=21):
        result = sweeper.sweep(p)
        assert result.n_ablations > 0
        _compare(result, reference_sweep(model, converted, p.token_ids, 0.0, prepend_bos=True), converted)
