"""The data model shared by ingest, store, query and dashboard.

A feature is ``(layer, feature)`` within a run, written ``L.F`` (``5.10603``): for residual
SAEs the layer is the index of the residual stream the SAE reads, so
``blocks.L.hook_resid_pre`` is layer L and ``blocks.L.hook_resid_post`` is layer L+1.

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


@dataclass(frozen=True, order=True)
class Node:
    """An SAE feature: ``layer`` is the residual-stream index, ``feature`` the SAE unit."""

    layer: int
    feature: int

    def __str__(self) -> str:
        return f"{self.layer}.{self.feature}"

    @classmethod
    def parse(cls, text: str) -> "Node":
        """Parse ``"L.F"``, e.g. ``"5.10603"``."""
        layer, sep, feature = text.strip().partition(".")
        if not sep or not layer.isdigit() or not feature.isdigit():
            raise ValueError(f"not a feature name of the form LAYER.FEATURE: {text!r}")
        return cls(int(layer), int(feature))


# The site contract (docs/method.md#sites-layers-and-feature-names): a non-residual feature is
# stored as ``site_code * 2**28 + index`` so (layer, feature) keys stay distinct per site.
# (h13n owns the canonical copy; these are the contract's exact names.)
SITE_CODES: dict[str, int] = {"resid": 0, "attn_z": 1, "mlp_out": 2, "transcoder": 3}
SITE_SHORT: dict[str, str] = {"resid": "res", "attn_z": "att", "mlp_out": "mlp", "transcoder": "tc"}
_SITE_BITS = 28


def encode_feature(site_kind: str, index: int) -> int:
    """The stored ``feature`` integer of SAE unit ``index`` at a site of kind ``site_kind``."""
    if not 0 <= index < 1 << _SITE_BITS:
        raise ValueError(f"feature index {index} out of range")
    return (SITE_CODES[site_kind] << _SITE_BITS) + index


def decode_feature(feature: int) -> tuple[str, int]:
    """``(site_kind, index)`` of a stored ``feature`` integer."""
    code, index = divmod(int(feature), 1 << _SITE_BITS)
    kinds = {v: k for k, v in SITE_CODES.items()}
    return kinds[code], index


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
