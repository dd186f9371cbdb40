"""A prompt group's sweep results as table columns: device tensors concatenated, copied to the host once.

The sweep (ingest/sweep.py) collects, per batch, tuples of device tensors; these helpers turn them
into the table spec's columns (``store.tables``), with a ``prompt`` index that :func:`split`
uses to hand each prompt its rows.
"""

from __future__ import annotations

import numpy as np
import torch

from featuregraph.store.models import PromptResult
from featuregraph.store.tables import numpy_columns, value_columns

TABLES = ("activations", "ablations", "edges", "logit_effects")


def to_host(t: torch.Tensor) -> np.ndarray:
    return host_many([t])[0]


def host_many(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    """Copy device tensors to the host (floats as float32): from a GPU, all copies go into pinned
    buffers without waiting, then one synchronisation; on the CPU, no copy at all."""
    tensors = [t.detach().float() if t.is_floating_point() else t.detach() for t in tensors]
    if not any(t.is_cuda for t in tensors):
        return [t.numpy() for t in tensors]
    bufs = []
    for t in tensors:
        buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)  # from torch's caching host allocator
        buf.copy_(t, non_blocking=True)
        bufs.append(buf)
    torch.cuda.current_stream().synchronize()
    return [b.numpy() for b in bufs]


def _cat(parts: list[torch.Tensor], repeat: int | list[int] = 1) -> torch.Tensor:
    """Parts flattened and joined; each element repeated ``repeat`` times (one count per part, or one for all)."""
    reps = repeat if isinstance(repeat, list) else [repeat] * len(parts)
    return torch.cat([p.reshape(-1).repeat_interleave(r) if r > 1 else p.reshape(-1) for p, r in zip(parts, reps, strict=True)])


def _layers(parts, layer_at: int, rows_at: int, repeat: int | list[int] = 1) -> torch.Tensor:
    """The layer ``p[layer_at]`` of each part, once for each of its ``repeat * len(p[rows_at])`` rows."""
    dev = parts[0][rows_at].device
    reps = repeat if isinstance(repeat, list) else [repeat] * len(parts)
    return torch.cat([torch.full((p[rows_at].shape[0] * r,), p[layer_at], device=dev) for p, r in zip(parts, reps, strict=True)])


def device_columns(out: dict[str, list], floor: float) -> dict[str, dict[str, torch.Tensor]]:
    """The four per-ablation tables as device columns (each with its ``prompt`` index); edges with
    ``|weight| <= floor`` are dropped on the device, before anything is copied."""
    tables: dict[str, dict[str, torch.Tensor]] = {}
    if parts := out["act"]:
        tables["activations"] = {"prompt": _cat([p[1] for p in parts]), "layer": _layers(parts, 0, 1),
            "position": _cat([p[2] for p in parts]), "feature": _cat([p[3] for p in parts]),
            "activation": _cat([p[4] for p in parts])}  # fmt: skip
    if parts := out["abl"]:
        tables["ablations"] = {"prompt": _cat([p[1] for p in parts]), "layer": _layers(parts, 0, 1),
            "feature": _cat([p[2] for p in parts]), "n_positions": _cat([p[3] for p in parts]),
            "max_activation": _cat([p[4] for p in parts]), "read_activation": _cat([p[5] for p in parts])}  # fmt: skip
    if parts := out["edge"]:
        k = [p[4].shape[1] for p in parts]  # edges kept per ablation: differs between target sites of different width
        weight = _cat([p[5] for p in parts])
        keep = weight.abs() > floor
        cols = {"prompt": _cat([p[2] for p in parts], k), "up_layer": _layers(parts, 0, 2, k),
            "up_feature": _cat([p[3] for p in parts], k), "down_layer": _layers(parts, 1, 2, k),
            "down_feature": _cat([p[4] for p in parts]), "weight": weight}  # fmt: skip
        tables["edges"] = {name: col[keep] for name, col in cols.items()}
    if parts := out["logit"]:
        k = parts[0][3].shape[1]
        tables["logit_effects"] = {"prompt": _cat([p[1] for p in parts], k), "layer": _layers(parts, 0, 1, k),
            "feature": _cat([p[2] for p in parts], k), "token_id": _cat([p[3] for p in parts]),
            "dlogp": _cat([p[4] for p in parts]), "dprob": _cat([p[5] for p in parts])}  # fmt: skip
    return tables


def host_tables(device: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, np.ndarray]]:
    """:func:`device_columns`' tables on the host in the table spec's dtypes (one copy, one sync)."""
    flat = [(t, c, col) for t, cols in device.items() for c, col in cols.items()]
    host = host_many([col for _, _, col in flat])
    out: dict[str, dict[str, np.ndarray]] = {
        t: {"prompt": np.empty(0, np.int64), **{k: np.empty(0) for k in value_columns(t)}} for t in TABLES
    }
    for (t, c, _), arr in zip(flat, host, strict=False):
        out[t][c] = arr
    return {t: {"prompt": cols.pop("prompt").astype(np.int64), **numpy_columns(t, cols)} for t, cols in out.items()}


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


def prompt_results(prompts: list, lengths: list[int], clean_logp, clean_p, columns: dict, top_next_k: int) -> list:
    """Each prompt's :class:`~featuregraph.store.models.PromptResult`: its tokens, clean top next tokens
    and its rows of the sweep's device ``columns`` (:func:`device_columns`), copied to the host once."""
    top = clean_p.topk(min(top_next_k, clean_p.shape[-1]), -1)
    tables = {name: split(cols, len(prompts)) for name, cols in host_tables(columns).items()}
    top_ids, top_p = to_host(top.indices), to_host(top.values)
    top_logp = to_host(clean_logp.gather(-1, top.indices))
    results = []
    for i, p in enumerate(prompts):
        tokens = {"position": np.arange(lengths[i]), "token_id": p.token_ids, "token": p.tokens or [str(t) for t in p.token_ids]}
        top_next = {"rank": np.arange(1, top_ids.shape[1] + 1), "token_id": top_ids[i], "prob": top_p[i], "logp": top_logp[i]}
        results.append(
            PromptResult(
                prompt_id=p.prompt_id, text=p.text, tag=p.tag, metadata=p.metadata,
                tables={"tokens": numpy_columns("tokens", tokens), "top_next_tokens": numpy_columns("top_next_tokens", top_next),
                        **{name: cols[i] for name, cols in tables.items()}},
            )
        )  # fmt: skip
    return results
