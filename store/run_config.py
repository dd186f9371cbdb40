"""The stored form of a run's settings (``runs.config``) and its upgrade path.

``runs.config`` is the only copy of a run's settings (migration 0007); ``runs.config_version``
names the layout it was written in. Python reads it back through :func:`upgrade_config`, which
brings any older layout up to :data:`CONFIG_VERSION` one step at a time, so that
``ingest/reload.py`` never feeds an old dict straight into today's dataclasses.

Layouts:

1. ``RunConfig.to_dict()``: ``model``, ``saes``, ``sweep``, ``device``, ``dtype``,
   ``prepend_bos`` (every database before migration 0007).
2. Layout 1 plus ``ingest``: ``too_long`` and ``bad_prompts``, the prompt policies of the
   ingest command that created the run (``too_long`` is part of the run's identity, so the
   command that resumes a run needs it).

3. Layout 2 plus the ingest-time pruning settings in ``sweep``: ``prune`` (``none`` for every
   older run: they are lossless), ``prune_top_k``, ``prune_min_path_edges``, ``prune_rel_floor``.

4. Layout 3 plus ``sweep.edge_target`` (``each-kind`` for every older run: they had residual
   SAEs only, where it means the next residual site, as they did).

5. Layout 4 plus ``precision``: what the sweep computed in, ``float32``, ``delta-bfloat16`` /
   ``delta-float16`` (low-precision delta mode, ingest/delta.py) or ``bfloat16`` / ``float16`` (every
   forward pass in that dtype). Older runs computed in their ``dtype`` throughout.

Every layout keeps ``$.sweep.*`` and ``$.dtype`` where the generated columns of ``runs`` read
them; a layout that moves them needs a migration that changes those columns.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

from featuregraph.errors import DatabaseError

CONFIG_VERSION = 5

# What an ingest did before it recorded its prompt policies: the CLI's defaults then and now.
V1_INGEST_DEFAULTS = {"too_long": "reject", "bad_prompts": "error"}


def _v1_to_v2(config: dict[str, Any]) -> dict[str, Any]:
    config["ingest"] = dict(V1_INGEST_DEFAULTS)
    return config


# Older runs were lossless; the other values are SweepConfig's defaults (unused while prune is none).
V2_PRUNE_DEFAULTS = {"prune": "none", "prune_top_k": 8, "prune_min_path_edges": 2, "prune_rel_floor": 0.1}


def _v2_to_v3(config: dict[str, Any]) -> dict[str, Any]:
    config.setdefault("sweep", {}).update(V2_PRUNE_DEFAULTS)
    return config


def _v3_to_v4(config: dict[str, Any]) -> dict[str, Any]:
    config.setdefault("sweep", {})["edge_target"] = "each-kind"
    return config


def _v4_to_v5(config: dict[str, Any]) -> dict[str, Any]:
    config["precision"] = config.get("dtype", "float32")
    return config


# version -> the function that turns a config of that version into the next one.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}


def upgrade_config(config: dict[str, Any] | str, version: int) -> dict[str, Any]:
    """A stored run config (a dict or its JSON text) of layout ``version``, as the current layout.

    Raises :class:`DatabaseError` for a layout newer than this featuregraph knows.
    """
    raw = json.loads(config) if isinstance(config, str) else copy.deepcopy(config)
    if not isinstance(raw, dict):
        raise DatabaseError(f"a run config must be a JSON object, got {type(raw).__name__}")
    if version > CONFIG_VERSION:
        raise DatabaseError(
            f"run config version {version} is newer than this featuregraph knows ({CONFIG_VERSION}); upgrade featuregraph"
        )
    while version < CONFIG_VERSION:
        if version not in UPGRADES:
            raise DatabaseError(f"no upgrade from run config version {version}")
        raw = UPGRADES[version](raw)
        version += 1
    return raw


__all__ = ["CONFIG_VERSION", "UPGRADES", "upgrade_config"]
