"""Paired path-versus-control statistics over prompts (docs/experiments.md, "Path validation").

Pure numpy and the standard library: no torch, so the numbers can be checked by hand.
"""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def sign_test(differences: np.ndarray) -> tuple[int, int, float]:
    """Two-sided exact binomial sign test of ``differences`` (path minus control) against a
    median of 0. Zero differences carry no sign and are dropped.

    Returns ``(below, compared, p)``: how many differences are negative, how many are
    nonzero, and ``p = min(1, 2 * P[X <= min(below, compared - below)])`` for
    X ~ Binomial(compared, 1/2); ``p = 1`` when nothing is compared.
    """
    d = np.asarray(differences, dtype=float)
    below, above = int((d < 0).sum()), int((d > 0).sum())
    n = below + above
    if n == 0:
        return below, n, 1.0
    tail = sum(math.comb(n, i) for i in range(min(below, above) + 1))
    # Integer arithmetic up to the last division keeps tiny p-values exact.
    return below, n, min(1.0, 2 * tail / 2**n)


def bootstrap_indices(n: int, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> np.ndarray:
    """``[resamples, n]`` prompt indices drawn uniformly with replacement (fixed seed), shared by
    every statistic of one experiment so that path, control and their difference stay paired."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_medians(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The median of each bootstrap resample of ``values`` (one per row of ``indices``)."""
    return np.median(np.asarray(values, dtype=float)[indices], axis=1)


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> list[float]:
    """The central ``confidence`` percentile interval of ``samples`` (numpy's linear interpolation)."""
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [float(lo), float(hi)]


def _describe(values: np.ndarray, medians: np.ndarray) -> dict:
    return {
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "ci95": percentile_interval(medians),
    }


def paired_summary(path: np.ndarray, control: np.ndarray, seed: int, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """Path against control over the same prompts (one value per prompt in each).

    ``path``, ``control``, ``difference`` (path minus control, per prompt): mean, median and a
    bootstrap percentile 95% interval of the median (prompts resampled with replacement,
    ``resamples`` times, ``seed``). ``path_below_control``/``compared``/``sign_test_p``: the
    exact two-sided sign test of the per-prompt differences (ties dropped).
    """
    path, control = np.asarray(path, dtype=float), np.asarray(control, dtype=float)
    if path.shape != control.shape or path.ndim != 1 or path.size == 0:
        raise ValueError("paired statistics need one path and one control value per prompt")
    diff = path - control
    idx = bootstrap_indices(path.size, seed, resamples)
    below, compared, p = sign_test(diff)
    return {
        "path": _describe(path, bootstrap_medians(path, idx)),
        "control": _describe(control, bootstrap_medians(control, idx)),
        "difference": _describe(diff, bootstrap_medians(diff, idx)),
        "path_below_control": below,
        "compared": compared,
        "sign_test_p": p,
        "bootstrap_resamples": resamples,
        "bootstrap_seed": seed,
    }
