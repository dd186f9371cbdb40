"""The data model shared by ingest, store, query and dashboard.

A feature is ``(layer, feature)`` within a run, written ``L.F`` (``5.10603``): for residual
SAEs the layer is the index of the residual stream the SAE reads, so
``blocks.L.hook_resid_pre`` is layer L and ``blocks.L.hook_resid_post`` is layer L+1.
Other sites (attention output ``attn_z``, ``mlp_out``, ``transcoder``) use their block index L
and are written ``L.att.F``, ``L.mlp.F``, ``L.tc.F``; their stored ``feature`` integer is
encoded as ``site_code * 2**28 + F`` (:func:`encode_feature`), so residual features keep their
plain index and every (layer, feature) key stays distinct across sites.

Sign convention everywhere: **ablated minus clean**. An edge weight
``act_down[ablated] - act_down[clean]`` < 0 means ablating the upstream feature
suppresses the downstream one (drawn red); > 0 means it promotes it (drawn blue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featuregraph.store.tables import PROMPT_RESULT_TABLES, table

Columns = dict[str, np.ndarray]

# The site contract: run_saes.site_kind -> the code in the top bits of a stored feature, and
# the short name used in feature names. migrations/0014_feature_sites.sql mirrors these in SQL.
SITE_CODES: dict[str, int] = {"resid": 0, "attn_z": 1, "mlp_out": 2, "transcoder": 3}
SITE_SHORT: dict[str, str] = {"resid": "res", "attn_z": "att", "mlp_out": "mlp", "transcoder": "tc"}
# Forward order of the sites of one layer: res L, then att L, then mlp / tc L (then res L+1).
SITE_RANK: dict[str, int] = {"resid": 0, "attn_z": 1, "mlp_out": 2, "transcoder": 2}
SITE_INDEX_BITS = 28
SITE_INDEX_LIMIT = 1 << SITE_INDEX_BITS  # a feature index must be below this (268,435,456)

_SITE_OF_CODE = {code: kind for kind, code in SITE_CODES.items()}
_SITE_OF_SHORT = {short: kind for kind, short in SITE_SHORT.items()}


def encode_feature(site_kind: str, index: int) -> int:
    """The stored ``feature`` integer of SAE unit ``index`` at a site of kind ``site_kind``.

    ``SITE_CODES[site_kind] * 2**28 + index``; a residual feature is its plain index.
    Raises ValueError for an unknown site kind or an index outside ``[0, 2**28)``.
    """
    if site_kind not in SITE_CODES:
        raise ValueError(f"unknown site kind {site_kind!r}; expected one of {', '.join(SITE_CODES)}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ValueError(f"feature index must be an integer, got {index!r}")
    if not 0 <= index < SITE_INDEX_LIMIT:
        raise ValueError(
            f"feature index {index} is outside [0, 2**{SITE_INDEX_BITS}) = [0, {SITE_INDEX_LIMIT})"
        )
    return SITE_CODES[site_kind] * SITE_INDEX_LIMIT + int(index)


def decode_feature(feature: int) -> tuple[str, int]:
    """``(site_kind, index)`` of a stored ``feature`` integer (the inverse of :func:`encode_feature`).

    Raises ValueError for a negative value or one whose site code is not in :data:`SITE_CODES`.
    """
    if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)):
        raise ValueError(f"stored feature must be an integer, got {feature!r}")
    code, index = divmod(int(feature), SITE_INDEX_LIMIT)
    if feature < 0 or code not in _SITE_OF_CODE:
        raise ValueError(
            f"stored feature {feature} has no valid site code (expected 0..{len(SITE_CODES) - 1})"
        )
    return _SITE_OF_CODE[code], index


@dataclass(frozen=True, order=True)
class Node:
    """An SAE feature: ``layer`` as in the module docstring, ``feature`` the stored (encoded) key.

    ``str(node)`` is ``L.F`` for a residual feature and ``L.att.F`` / ``L.mlp.F`` / ``L.tc.F``
    for the other sites, with F the SAE unit's index.
    """

    layer: int
    feature: int

    @classmethod
    def at(cls, layer: int, site_kind: str, index: int) -> "Node":
        """The node of SAE unit ``index`` at the ``site_kind`` site of ``layer``."""
        return cls(layer, encode_feature(site_kind, index))

    @property
    def site_kind(self) -> str:
        return decode_feature(self.feature)[0]

    @property
    def index(self) -> int:
        """The SAE unit's index within its own SAE (the decoded feature)."""
        return decode_feature(self.feature)[1]

    @property
    def forward_key(self) -> tuple[int, int]:
        """``(layer, rank)``: where the feature's site sits in the forward pass (SITE_RANK)."""
        return self.layer, SITE_RANK[self.site_kind]

    def __str__(self) -> str:
        return feature_name(self.layer, self.feature)

    @classmethod
    def parse(cls, text: str) -> "Node":
        """Parse ``"L.F"`` (residual, e.g. ``"5.10603"``), ``"L.res.F"``, ``"L.att.F"``,
        ``"L.mlp.F"`` or ``"L.tc.F"``; ValueError with the accepted forms otherwise."""
        parts = str(text).strip().split(".")
        site = "resid"
        if len(parts) == 3 and parts[1] in _SITE_OF_SHORT:
            site = _SITE_OF_SHORT[parts[1]]
            parts = [parts[0], parts[2]]
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
            raise ValueError(
                f"not a feature name: {text!r}; expected LAYER.FEATURE (residual) or LAYER.SITE.FEATURE "
                f"with SITE one of {', '.join(SITE_SHORT.values())}"
            )
        try:
            return cls(int(parts[0]), encode_feature(site, int(parts[1])))
        except ValueError as exc:
            raise ValueError(f"not a feature name: {text!r}: {exc}") from None


def feature_name(layer: int, feature: int) -> str:
    """The display name of a stored ``(layer, feature)``: ``L.F`` or ``L.att.F`` etc."""
    site, index = decode_feature(feature)
    return f"{layer}.{index}" if site == "resid" else f"{layer}.{SITE_SHORT[site]}.{index}"


# Column names and numpy dtypes of each per-prompt result table, without run_id / prompt_id
# (from the table spec, store/tables.py).
PROMPT_TABLES: dict[str, dict[str, Any]] = {
    name: table(name).numpy_dtypes(skip=("run_id", "prompt_id")) for name in PROMPT_RESULT_TABLES
}


@dataclass
class PromptResult:
    """Everything the sweep learned about one prompt, as numpy columns per table.

    ``tables`` maps each name in :data:`PROMPT_TABLES` to its columns (equal lengths).
    """

    prompt_id: int
    text: str
    tag: str | None = None
    metadata: dict[str, Any] | None = None
    tables: dict[str, Columns] = field(default_factory=dict)
    external_id: str | None = None  # the prompt file's `id`
    tags: list[str] | None = None  # the prompt file's `tags` (and `tag`)

    @property
    def n_tokens(self) -> int:
        return len(self.tables["tokens"]["position"])

    @property
    def n_ablations(self) -> int:
        return len(self.tables["ablations"]["feature"])
