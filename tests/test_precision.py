"""Low-precision sweeps stay within the documented tolerance against float32 (ingest/precision.py)."""

from __future__ import annotations

import math

import pytest

from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.delta import make_sweeper
from featuregraph.ingest.precision import FULL_TOLERANCE, TOLERANCE, cast, compare, within_tolerance
from featuregraph.ingest.sweep import Sweeper


@pytest.fixture(scope="module")
def demo_prompts():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from sweep_bench import load_demo

    loaded, prompts = load_demo("cpu", n_prompts=3)
    ref = Sweeper(loaded.model, loaded.sites, SweepConfig(), loaded.prepend_bos).sweep_many(prompts)
    return loaded, prompts, ref


def test_compare_of_a_run_with_itself_is_exact(demo_prompts):
    _, _, ref = demo_prompts
    m = compare(ref, ref)
    assert m["edges_compared"] > 1000 and m["logits_compared"] > 1000
    assert m["edge_rel_max"] == m["logit_rel_max"] == 0.0 and m["top32_overlap_min"] == 1.0


def test_bfloat16_sweep_of_the_demo_is_within_the_documented_tolerance(demo_prompts):
    """Delta mode (what --dtype bfloat16 runs on the demo) against the tight tolerance."""
    loaded, prompts, ref = demo_prompts
    sweeper, precision = make_sweeper(loaded.model, loaded.sites, SweepConfig(), loaded.prepend_bos, "bfloat16")
    assert precision == "delta-bfloat16"
    m = compare(ref, sweeper.sweep_many(prompts))
    assert within_tolerance(m, "bfloat16") == [], m
    # Low precision does change the numbers: the check is not vacuous.
    assert m["edge_rel_median"] > 1e-4 and not math.isnan(m["top32_overlap_mean"])
    assert set(TOLERANCE) == set(FULL_TOLERANCE) == {"bfloat16", "float16"}


def test_full_bfloat16_sweep_of_the_demo_is_within_its_looser_tolerance(demo_prompts):
    """Every forward pass in bfloat16 (runs delta mode cannot serve): the looser documented bounds."""
    loaded, prompts, ref = demo_prompts
    model, sites = cast(loaded.model, loaded.sites, "bfloat16")
    assert next(model.parameters()).dtype.__repr__() == "torch.bfloat16"
    assert next(loaded.model.parameters()).dtype.__repr__() == "torch.float32", "the original is left as it is"
    m = compare(ref, Sweeper(model, sites, SweepConfig(), loaded.prepend_bos).sweep_many(prompts))
    assert within_tolerance(m, "bfloat16", mode="full") == [], m
    assert within_tolerance(m, "bfloat16") != [], "full low precision is outside delta mode's tolerance"
