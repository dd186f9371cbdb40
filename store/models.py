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
