"""SAE sites: which hook an SAE reads and writes, its kind, its place in the forward pass.

The site contract (docs/method.md#sites-layers-and-feature-names):

- ``resid``: ``blocks.L.hook_resid_pre`` (layer L) or ``blocks.L.hook_resid_post`` (layer L+1);
- ``attn_z``: ``blocks.L.attn.hook_z``, heads flattened ``(n_heads d_head)`` as sae_lens does;
- ``mlp_out``: ``blocks.L.hook_mlp_out``;
- ``transcoder``: reads ``blocks.L.ln2.hook_normalized`` or ``blocks.L.hook_mlp_in`` (its
  ``hook_name``), writes ``blocks.L.hook_mlp_out`` (its ``hook_name_out``).

Non-residual sites take their block index L as ``layer``. Sites are ordered by
``(layer, rank)`` with rank resid 0, attn_z 1, mlp_out and transcoder 2.
"""

from __future__ import annotations

import re
from typing import Any

from featuregraph.errors import InputError, LoadError
from featuregraph.store.models import encode_feature

RESID_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")
ATTN_Z_HOOK = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")
MLP_OUT_HOOK = re.compile(r"^blocks\.(\d+)\.hook_mlp_out$")
MLP_IN_HOOK = re.compile(r"^blocks\.(\d+)\.(ln2\.hook_normalized|hook_mlp_in)$")
RANK = {"resid": 0, "attn_z": 1, "mlp_out": 2, "transcoder": 2}
# Edge targets by kind group: a transcoder and an MLP-output SAE both stand for the MLP's output.
GROUP = {"resid": "resid", "attn_z": "attn_z", "mlp_out": "mlp", "transcoder": "mlp"}
EDGE_TARGET_MODES = ("each-kind", "next")  # or a site's hook name
SUPPORTED = (
    "blocks.L.hook_resid_pre/post, blocks.L.attn.hook_z, blocks.L.hook_mlp_out, "
    "and transcoders reading blocks.L.ln2.hook_normalized or blocks.L.hook_mlp_in"
)


def site_of(hook_name: str, hook_name_out: str | None, is_transcoder: bool, what: str) -> tuple[str, int]:
    """``(site_kind, layer)`` of an SAE reading ``hook_name`` (a transcoder also writes
    ``hook_name_out``); a one-line :class:`LoadError` for anything else. ``what`` names the SAE."""
    if is_transcoder or (hook_name_out and hook_name_out != hook_name):
        m = MLP_IN_HOOK.match(hook_name)
        out = MLP_OUT_HOOK.match(hook_name_out or "")
        if not m or not out or out.group(1) != m.group(1):
            raise LoadError(
                f"unsupported transcoder site for SAE {what}: reads {hook_name!r}, writes {hook_name_out!r}; "
                "a transcoder must read blocks.L.ln2.hook_normalized or blocks.L.hook_mlp_in and write blocks.L.hook_mlp_out"
            )
        return "transcoder", int(m.group(1))
    if m := RESID_HOOK.match(hook_name):
        return "resid", int(m.group(1)) + (1 if m.group(2) == "post" else 0)
    if m := ATTN_Z_HOOK.match(hook_name):
        return "attn_z", int(m.group(1))
    if m := MLP_OUT_HOOK.match(hook_name):
        return "mlp_out", int(m.group(1))
    raise LoadError(f"unsupported SAE site {hook_name!r} for SAE {what}: supported are {SUPPORTED}")


def order_key(site_kind: str, layer: int) -> tuple[int, int]:
    """Where a site sits in the forward pass: res L < att L < mlp/tc L < res L+1."""
    return layer, RANK[site_kind]


def feature_offset(site_kind: str) -> int:
    """What is added to an SAE unit index to store it (``encode_feature``'s offset)."""
    return encode_feature(site_kind, 0)


def hook_width(model_cfg: Any, site_kind: str) -> int:
    """The width of the vector an SAE of this kind reads (``d_in``) and writes."""
    if site_kind == "attn_z":
        return int(model_cfg.n_heads) * int(model_cfg.d_head)
    return int(model_cfg.d_model)


def write_hook(site: Any) -> str:
    """The hook whose value an ablation at ``site`` changes (a transcoder's output hook)."""
    return site.hook_out or site.hook_name


def edge_targets(sites: list[Any], mode: str) -> list[list[int]]:
    """Per site (in forward order), the indices of the sites its features' edges go to.

    ``each-kind``: the next site of each kind after it (residual, attention, MLP; a transcoder
    counts as MLP), so from ``res L``: ``att L``, ``mlp L`` and ``res L+1`` where they exist;
    for residual-only runs, the next residual site. ``next``: the single next site. A hook
    name: that site, for every site before it (sites at or after it get no edges).
    """
    n = len(sites)
    if mode == "next":
        return [[k + 1] if k + 1 < n else [] for k in range(n)]
    if mode == "each-kind":
        out = []
        for k in range(n):
            seen: dict[str, int] = {}
            for j in range(k + 1, n):
                seen.setdefault(GROUP[sites[j].site_kind], j)
            out.append(sorted(seen.values()))
        return out
    named = [j for j, s in enumerate(sites) if write_hook(s) == mode or s.hook_name == mode]
    if not named:
        hooks = ", ".join(s.hook_name for s in sites)
        raise InputError(
            f"edge target {mode!r} is neither {' nor '.join(EDGE_TARGET_MODES)} nor the hook of one of the run's SAEs ({hooks})"
        )
    return [[named[0]] if k < named[0] else [] for k in range(n)]
