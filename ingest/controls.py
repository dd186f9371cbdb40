"""Control feature sets for path validation (docs/method.md, "Validating a path").

A control is ablated beside the path in each prompt, at the same SAE sites and with as many features:

- ``matched`` (default): for each path feature, the feature active in that prompt at that site (path
  features excluded, without replacement) whose activation is closest to the path feature's;
- ``random``: random features active in that prompt at that site (no matching of magnitude);
- ``zero``: features 0, 1, ... at the same sites, the seed's control, whether active or not.

A feature's activation in a prompt is its largest |clean activation| over the positions an ablation
changes there (every position from the first non-BOS token to the read position; at a site after the
last block only the read position). "Active" means that number is nonzero. Where a prompt has too few
active features at a site, the control gets fewer features there and the shortfall is recorded: it is
never filled with inactive features.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

CONTROLS = ("matched", "random", "zero")


@dataclass
class ControlChoice:
    """One prompt's control: features per site index, and how many path features found no partner."""

    features: dict[int, list[int]]
    unmatched: int = 0


def _closest(pool: list[int], strength: np.ndarray, target: float, rng: random.Random) -> int:
    dist = np.abs(strength[pool] - target)
    ties = [f for f, d in zip(pool, dist, strict=True) if d == dist.min()]
    return ties[0] if len(ties) == 1 else rng.choice(ties)


def choose_controls(
    kind: str, path: dict[int, list[int]], strength: dict[int, np.ndarray], seed: int
) -> list[ControlChoice]:
    """One :class:`ControlChoice` per prompt.

    ``path``: site index -> path features; ``strength[k]``: [prompts, d_sae] activation of every
    feature of site k in each prompt (see the module docstring). Ties in the matching are broken by
    a ``random.Random(seed)``, as is the random control's draw.
    """
    n_prompts = next(iter(strength.values())).shape[0]
    if kind == "zero":
        return [ControlChoice({k: list(range(len(feats))) for k, feats in path.items()}) for _ in range(n_prompts)]
    rng = random.Random(seed)
    out = []
    for i in range(n_prompts):
        choice = ControlChoice({})
        for k in sorted(path):
            s = strength[k][i]
            pool = sorted(set(np.flatnonzero(s).tolist()) - set(path[k]))
            want = len(path[k])
            if kind == "random":
                picked = sorted(rng.sample(pool, min(want, len(pool))))
            else:
                picked = []
                # Strongest path features first: they are the hardest to match.
                for f in sorted(path[k], key=lambda f: (-s[f], f)):
                    if not pool:
                        break
                    c = _closest(pool, s, float(s[f]), rng)
                    pool.remove(c)
                    picked.append(c)
            choice.features[k] = picked
            choice.unmatched += want - len(picked)
        out.append(choice)
    return out


def inactive(sets: dict[int, list[int]], strength: dict[int, np.ndarray], i: int) -> list[tuple[int, int]]:
    """The (site index, feature) pairs of ``sets`` that are inactive in prompt ``i``."""
    return [(k, f) for k in sorted(sets) for f in sets[k] if strength[k][i, f] == 0]


def activation_ratio(control: dict[int, list[int]], path: dict[int, list[int]], strength: dict[int, np.ndarray], i: int):
    """Summed activation of the control's features over the path's in prompt ``i`` (None when the
    path's is 0): how much the control removes next to what the path removes."""
    total = sum(float(strength[k][i, f]) for k in path for f in path[k])
    ctrl = sum(float(strength[k][i, f]) for k in control for f in control[k])
    return ctrl / total if total > 0 else None
