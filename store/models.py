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


@dataclass(frozen=True)
class Edge:
    """``weight = act_down[ablated] - act_down[clean]`` at the read position, in the
    downstream SAE's activation units."""

    prompt_id: int
    up: Node
    down: Node
    weight: float


@dataclass(frozen=True)
class LogitEffect:
    """Effect of ablating ``node`` on next-token ``token_id`` at the read position:
    ``dlogp`` in nats (log-prob ablated minus clean), ``dprob`` in probability."""

    prompt_id: int
    node: Node
    token_id: int
    dlogp: float
    dprob: float


# Column names and numpy dtypes of each per-prompt table, without run_id / prompt_id.
PROMPT_TABLES: dict[str, dict[str, type]] = {
    "tokens": {"position": np.int16, "token_id": np.int32, "token": object},
    "top_next_tokens": {"rank": np.int16, "token_id": np.int32, "prob": np.float32, "logp": np.float32},
    "activations": {
        "layer": np.int16,
        "position": np.int16,
        "feature": np.int32,
        "activation": np.float32,
    },
    "ablations": {
        "layer": np.int16,
        "feature": np.int32,
        "n_positions": np.int16,
        "max_activation": np.float32,
        "read_activation": np.float32,
    },
    "edges": {
        "up_layer": np.int16,
        "up_feature": np.int32,
        "down_layer": np.int16,
        "down_feature": np.int32,
        "weight": np.float32,
    },
    "logit_effects": {
        "layer": np.int16,
        "feature": np.int32,
        "token_id": np.int32,
        "dlogp": np.float32,
        "dprob": np.float32,
    },
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

    def edge_list(self) -> list[Edge]:
        """The kept edges as objects (convenient in tests and small scripts)."""
        e = self.tables["edges"]
        return [
            Edge(self.prompt_id, Node(int(ul), int(uf)), Node(int(dl), int(df)), float(w))
            for ul, uf, dl, df, w in zip(
                e["up_layer"], e["up_feature"], e["down_layer"], e["down_feature"], e["weight"]
            )
        ]
