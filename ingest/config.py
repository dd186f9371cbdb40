"""Typed, frozen configuration of an ingest run, recorded in ``runs.config``.

``__post_init__`` only validates; nothing here has side effects. :meth:`RunConfig.stored`
is the dict an ingest stores (layout ``store.run_config.CONFIG_VERSION``) and
:meth:`RunConfig.from_stored` reads one back once ``store.run_config.upgrade_config`` has
brought it to that layout. Each setting's ``help`` (field metadata) is also its
``featuregraph ingest`` flag's help: the CLI builds the flags from these fields
(featuregraph/cli_support.py), so a new field gets its flag here, in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from featuregraph.errors import InputError

DTYPES = ("float32", "float64", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N
TOO_LONG_POLICIES = ("reject", "truncate")  # prompts longer than the model's context
PRUNE_MODES = ("none", "paths", "relative")  # ingest-time edge pruning (ingest/pruning.py)
PRUNE_FIELDS = ("prune", "prune_top_k", "prune_min_path_edges", "prune_rel_floor")


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A config field with its command-line help (and, in ``meta``, ``choices`` or ``flag``)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class SweepConfig:
    """What one prompt's sweep computes and keeps (docs/method.md#edges, docs/method.md#logit-effects).

    Attributes:
        coefficient: ablation coefficient c; the feature's contribution is scaled by c
            (0 = zero-ablation, 1 = no change, 2 = doubled).
        edge_top_k: edges kept per ablation, the largest by |weight|.
        edge_floor: edges with |weight| <= floor are dropped (downstream activation units).
        logit_top_k: tokens kept per ablation, top-k promoted and top-k suppressed by dprob.
        top_next_k: most likely next tokens of the clean pass stored per prompt.
        read_position: token position edges and logits are read at; -1 = the last token.
        batch_size: ablations per forward pass (memory, not semantics).
        prune: ingest-time pruning of each prompt's edges (ingest/pruning.py): ``none``
            (lossless, the default), ``paths`` (the ``prune_top_k`` largest per ablation, then
            only edges on a chain of at least ``prune_min_path_edges`` edges) or ``relative``
            (|weight| >= ``prune_rel_floor`` x the ablation's largest |weight|).
        edge_target: which downstream sites edges go to (ingest/sites.py ``edge_targets``):
            ``each-kind`` (default), ``next``, or one site's hook name. For residual-only runs
            ``each-kind`` and ``next`` are the same: the next residual site.
    """

    coefficient: float = setting(0.0, "Ablation coefficient c: 0 = zero-ablation, 1 = no change.")
    edge_top_k: int = setting(32, "Edges kept per ablation, by |weight|.")
    edge_floor: float = setting(1e-4, "Drop edges with |weight| at or below this.")
    logit_top_k: int = setting(10, "Tokens kept per ablation: top-k promoted and top-k suppressed by dprob.")
    top_next_k: int = setting(10, "Clean top next tokens stored per prompt.")
    read_position: int = setting(-1, "Token position edges and logits are read at (-1: the last token).")
    batch_size: int = setting(64, "Ablations per forward pass (speed and memory, not results).")
    prune: str = setting(
        "none", "Ingest-time edge pruning: none (lossless), paths or relative (see docs/method.md).",
        choices=PRUNE_MODES,
    )  # fmt: skip
    prune_top_k: int = setting(8, "With --prune paths: edges kept per ablation before the path rule.")
    prune_min_path_edges: int = setting(2, "With --prune paths: keep edges on chains of at least this many edges.")
    prune_rel_floor: float = setting(0.1, "With --prune relative: keep |weight| >= this x the ablation's largest.")
    edge_target: str = setting(
        "each-kind", "Where edges go: each-kind (the next site of each kind: residual, attention, MLP), next (the "
        "next site only) or a site's hook name, e.g. blocks.5.attn.hook_z (see docs/sweep.md).",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.prune not in PRUNE_MODES:
            raise InputError(f"prune must be one of {', '.join(PRUNE_MODES)}, got {self.prune!r}")
        if self.prune_top_k < 1:
            raise InputError(f"prune_top_k must be >= 1, got {self.prune_top_k}")
        if self.prune_min_path_edges < 1:
            raise InputError(f"prune_min_path_edges must be >= 1, got {self.prune_min_path_edges}")
        if not 0 <= self.prune_rel_floor <= 1:
            raise InputError(f"prune_rel_floor must be between 0 and 1, got {self.prune_rel_floor}")
        if self.edge_top_k < 1:
            raise InputError(f"edge_top_k must be >= 1, got {self.edge_top_k}")
        if not self.edge_floor >= 0:
            raise InputError(f"edge_floor must be >= 0, got {self.edge_floor}")
        if self.logit_top_k < 1:
            raise InputError(f"logit_top_k must be >= 1, got {self.logit_top_k}")
        if self.top_next_k < 1:
            raise InputError(f"top_next_k must be >= 1, got {self.top_next_k}")
        if self.read_position < -1:
            raise InputError(f"read_position must be -1 (last token) or >= 0, got {self.read_position}")
        if not self.edge_target.strip():
            raise InputError("edge_target must be each-kind, next or a site's hook name, got an empty string")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")

    def semantic(self) -> dict[str, Any]:
        """The settings that change results (batch_size only changes speed)."""
        d = dataclasses.asdict(self)
        d.pop("batch_size")
        # Lossless runs keep the identity they had before pruning existed (so they resume), and
        # only the settings of the chosen pruning mode change results.
        unused = {"none": PRUNE_FIELDS, "paths": ("prune_rel_floor",),
                  "relative": ("prune_top_k", "prune_min_path_edges")}[self.prune]  # fmt: skip
        for key in unused:
            d.pop(key)
        if d["edge_target"] == "each-kind":  # runs from before the setting keep their identity
            d.pop("edge_target")
        return d


@dataclass(frozen=True)
class ModelSpec:
    """A HookedTransformer to load: a hub name (``gpt2``) or a local Hugging Face folder.

    The processing flags mean what they mean in ``HookedTransformer.from_pretrained``;
    SAEs' ``model_from_pretrained_kwargs`` override them.
    """

    name_or_path: str
    fold_ln: bool = setting(True, "Fold LayerNorm weights into the next layer.", flag="--no-fold-ln")
    center_writing_weights: bool = setting(
        True, "Center the weights that write to the residual stream.", flag="--no-center-writing-weights"
    )
    center_unembed: bool = setting(True, "Center the unembedding (logits sum to zero).", flag="--no-center-unembed")

    def __post_init__(self) -> None:
        if not self.name_or_path.strip():
            raise InputError("model name or path is empty")


@dataclass(frozen=True)
class SaeSpec:
    """One SAE: from an sae_lens release (``release`` + ``sae_id``) or a local folder (``path``)."""

    release: str | None = None
    sae_id: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        by_release = self.release is not None or self.sae_id is not None
        if by_release == (self.path is not None):
            raise InputError("an SAE is either --sae-release with --sae-id, or --sae PATH")
        if by_release and not (self.release and self.sae_id):
            raise InputError("--sae-release needs --sae-id (or --sae-layers), and vice versa")

    @property
    def source(self) -> Literal["release", "path"]:
        return "path" if self.path is not None else "release"

    def describe(self) -> str:
        return self.path if self.path is not None else f"{self.release}/{self.sae_id}"


@dataclass(frozen=True)
class RunConfig:
    """Everything an ingest run was asked to do."""

    model: ModelSpec
    saes: tuple[SaeSpec, ...]
    sweep: SweepConfig = field(default_factory=SweepConfig)
    device: str = setting("auto", f"{', '.join(DEVICES)} or cuda:N.")
    dtype: str = setting("float32", "Arithmetic dtype. bfloat16/float16 run in delta mode where supported (float32 clean pass, low-precision linear maps on each ablation's difference; docs/sweep.md#precision), else every pass in that dtype.", choices=DTYPES)
    prepend_bos: bool | None = setting(None, "Prepend a BOS token (default: as the SAEs' metadata says).")

    def __post_init__(self) -> None:
        if not self.saes:
            raise InputError("no SAEs given: pass --sae PATH or --sae-release/--sae-id")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise InputError(f"unknown device {self.device!r}; choose from {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def stored(self, too_long: str, bad_prompts: str, precision: str | None = None) -> dict[str, Any]:
        """What ``runs.config`` holds for a run created with these prompt policies; ``precision`` is
        what its sweep computed in (``float32``, ``delta-bfloat16``, ...; ingest/delta.py), default ``dtype``."""
        ingest = {"too_long": too_long, "bad_prompts": bad_prompts}
        return {**self.to_dict(), "ingest": ingest, "precision": precision or self.dtype}

    @classmethod
    def from_stored(cls, raw: dict[str, Any]) -> "RunConfig":
        """The config of a stored run, from ``runs.config`` in the current layout (see
        ``store.run_config.upgrade_config``); the prompt policies under ``ingest`` are not part of it."""
        return cls(
            model=ModelSpec(**raw["model"]),
            saes=tuple(SaeSpec(**s) for s in raw["saes"]),
            sweep=SweepConfig(**raw["sweep"]),
            device=raw["device"],
            dtype=raw["dtype"],
            prepend_bos=raw["prepend_bos"],
        )
