"""A prompt group's sweep results as table columns: device tensors concatenated, copied to the host once.

The sweep (ingest/sweep.py) collects, per batch, tuples of device tensors; these helpers turn them
into the table spec's columns (``store.tables``), with a ``prompt`` index that :func:`split`
uses to hand each prompt its rows.
"""

from __future__ import annotations

import numpy as np
import torch

from featuregraph.store.tables import numpy_columns, value_columns


def to_host(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


def cat_to_host(parts: list[torch.Tensor]) -> np.ndarray:
    """Concatenate on the device, then copy to the host once."""
    return to_host(torch.cat(parts)) if parts else np.empty(0)


def _typed(name: str, prompt: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A result table's columns in the table spec's dtypes, after the ``prompt`` index split uses."""
    return {"prompt": prompt.astype(np.int64), **numpy_columns(name, columns)}


def _layers(parts, layer_at: int, rows_at: int, repeat: int = 1) -> np.ndarray:
    """The layer ``p[layer_at]`` of each part, once for each of its ``repeat * len(p[rows_at])`` rows."""
    return np.repeat([p[layer_at] for p in parts], [p[rows_at].shape[0] * repeat for p in parts])


def activation_columns(parts) -> dict[str, np.ndarray]:
    if not parts:
        return _typed("activations", np.empty(0), {k: np.empty(0) for k in value_columns("activations")})
    return _typed("activations", cat_to_host([p[1] for p in parts]), {
        "layer": _layers(parts, 0, 1),
        "position": cat_to_host([p[2] for p in parts]),
        "feature": cat_to_host([p[3] for p in parts]),
        "activation": cat_to_host([p[4] for p in parts]),
    })  # fmt: skip


def ablation_columns(parts) -> dict[str, np.ndarray]:
    if not parts:
        return _typed("ablations", np.empty(0), {k: np.empty(0) for k in value_columns("ablations")})
    return _typed("ablations", cat_to_host([p[1] for p in parts]), {
        "layer": _layers(parts, 0, 1),
        "feature": cat_to_host([p[2] for p in parts]),
        "n_positions": cat_to_host([p[3] for p in parts]),
        "max_activation": cat_to_host([p[4] for p in parts]),
        "read_activation": cat_to_host([p[5] for p in parts]),
    })  # fmt: skip


def edge_columns(parts, floor: float) -> dict[str, np.ndarray]:
    if not parts:
        return _typed("edges", np.empty(0), {k: np.empty(0) for k in value_columns("edges")})
    k = parts[0][4].shape[1]
    weight = cat_to_host([p[5].reshape(-1) for p in parts])
    keep = np.abs(weight) > floor
    return _typed("edges", np.repeat(cat_to_host([p[2] for p in parts]), k)[keep], {
        "up_layer": _layers(parts, 0, 2, k)[keep],
        "up_feature": np.repeat(cat_to_host([p[3] for p in parts]), k)[keep],
        "down_layer": _layers(parts, 1, 2, k)[keep],
        "down_feature": cat_to_host([p[4].reshape(-1) for p in parts])[keep],
        "weight": weight[keep],
    })  # fmt: skip


def logit_columns(parts) -> dict[str, np.ndarray]:
    if not parts:
        return _typed("logit_effects", np.empty(0), {k: np.empty(0) for k in value_columns("logit_effects")})
    k = parts[0][3].shape[1]
    return _typed("logit_effects", np.repeat(cat_to_host([p[1] for p in parts]), k), {
        "layer": _layers(parts, 0, 1, k),
        "feature": np.repeat(cat_to_host([p[2] for p in parts]), k),
        "token_id": cat_to_host([p[3].reshape(-1) for p in parts]),
        "dlogp": cat_to_host([p[4].reshape(-1) for p in parts]),
        "dprob": cat_to_host([p[5].reshape(-1) for p in parts]),
    })  # fmt: skip


def split(cols: dict[str, np.ndarray], n_prompts: int) -> list[dict[str, np.ndarray]]:
    """Split columns with a ``prompt`` index into one dict per prompt (order kept within each)."""
    prompt = cols.pop("prompt")
    order = np.argsort(prompt, kind="stable")
    cuts = np.searchsorted(prompt[order], np.arange(n_prompts + 1))
    out = []
    for i in range(n_prompts):
        sel = order[cuts[i] : cuts[i + 1]]
        out.append({name: col[sel] for name, col in cols.items()})
    return out
