"""The graph JSON that Neuronpedia's viewer and circuit-tracer exchange, as a pydantic model.

Written from the format's published field list (docs/graphs.md has the mapping to
featuregraph's tables). Four top-level keys are required: ``metadata``, ``qParams``,
``nodes``, ``links``. Unknown fields are kept (``extra="allow"``) so that a file read and
written again loses nothing; dumping with ``exclude_unset=True`` writes back only what was
given. Sign convention of the file: a link's ``weight`` is positive when its source promotes
its target (featuregraph stores the negation, its "ablated minus clean" convention).

Feature ids: with ``metadata.schema_version == 1`` or a ``feature_details.neuronpedia_source_set``,
a feature node's ``feature`` is the Cantor pairing of (layer, index) (:func:`cantor`).
"""

from __future__ import annotations

import re
from math import isqrt
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The metadata.schema_version featuregraph writes (1: feature ids are Cantor-paired).
GRAPH_SCHEMA_VERSION = 1
# Neuronpedia's upload refuses files larger than this (its signed-put contentLength limit).
NEURONPEDIA_MAX_BYTES = 209_715_200


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FeatureDetails(_Open):
    feature_json_base_url: Optional[str] = None
    neuronpedia_source_set: Optional[str] = None
    neuronpedia_lorsa_source_set: Optional[str] = None


class Generator(_Open):
    name: Optional[str] = None
    version: Optional[str] = None
    url: Optional[str] = None
    email: Optional[str] = None


class Info(_Open):
    description: Optional[str] = None
    creator_name: Optional[str] = None
    creator_url: Optional[str] = None
    source_urls: Optional[list[str]] = None
    generator: Optional[Generator] = None
    create_time_ms: Optional[int] = None


class GenerationSettings(_Open):
    max_n_logits: Optional[int] = None
    desired_logit_prob: Optional[float] = None
    batch_size: Optional[int] = None
    max_feature_nodes: Optional[int] = None


class PruningSettings(_Open):
    node_threshold: Optional[float] = None
    edge_threshold: Optional[float] = None


class Metadata(_Open):
    slug: str
    scan: str
    prompt_tokens: list[str]
    prompt: str
    feature_details: Optional[FeatureDetails] = None
    node_threshold: Optional[float] = None
    info: Optional[Info] = None
    generation_settings: Optional[GenerationSettings] = None
    pruning_settings: Optional[PruningSettings] = None
    schema_version: Optional[int] = None
    transcoder_list: Optional[list[Any]] = None  # circuit-tracer's own model requires it


class QParams(_Open):
    pinnedIds: Optional[list[str]] = None
    supernodes: Optional[list[list[Any]]] = None
    linkType: Optional[str] = None
    clickedId: Optional[str] = None
    sg_pos: Optional[str] = None


class GraphNode(_Open):
    node_id: str
    feature: Optional[int]
    layer: Union[int, str]
    ctx_idx: int = Field(ge=0)
    feature_type: str
    jsNodeId: str
    clerp: str
    influence: Optional[float] = None
    activation: Optional[float] = None
    token_prob: Optional[float] = None
    is_target_logit: Optional[bool] = None
    qk_tracing_results: Optional[Any] = None


class GraphLink(_Open):
    source: str
    target: str
    weight: float = Field(allow_inf_nan=False)  # checked in pydantic's core: links are most of a file


class GraphFile(_Open):
    """One graph file. Beyond the fields' types it checks: node ids unique, every link's ends
    are nodes, no link given twice, every ctx_idx inside the prompt."""

    metadata: Metadata
    qParams: QParams
    nodes: list[GraphNode]
    links: list[GraphLink]
    qk_only_nodes: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _consistent(self) -> "GraphFile":
        ids: set[str] = set()
        n_tokens = len(self.metadata.prompt_tokens)
        for node in self.nodes:
            if node.node_id in ids:
                raise ValueError(f"node_id {node.node_id!r} occurs twice")
            ids.add(node.node_id)
            if node.ctx_idx >= n_tokens:
                raise ValueError(
                    f"node {node.node_id!r}: ctx_idx {node.ctx_idx} is past the {n_tokens} prompt tokens"
                )
        pairs: set[tuple[str, str]] = set()
        for link in self.links:
            for end in (link.source, link.target):
                if end not in ids:
                    raise ValueError(f"link {link.source!r} -> {link.target!r} names no node {end!r}")
            if (link.source, link.target) in pairs:
                raise ValueError(f"link {link.source!r} -> {link.target!r} occurs twice")
            pairs.add((link.source, link.target))
        return self

    @property
    def uses_cantor(self) -> bool:
        """Whether feature ids are Cantor-paired, by the rule Neuronpedia's viewer applies."""
        details = self.metadata.feature_details
        return self.metadata.schema_version == 1 or bool(details and details.neuronpedia_source_set)

    def dump(self, without: set[str] | None = None) -> dict[str, Any]:
        """The JSON document: the fields that were given, unknown ones included (less the
        top-level keys in ``without``)."""
        return self.model_dump(mode="json", exclude_unset=True, exclude=without)


def validation_reason(exc: ValidationError) -> str:
    """The first problem pydantic found, in one line (``where: what``)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "file"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def cantor(layer: int, index: int) -> int:
    """Neuronpedia's feature id of unit ``index`` of the dictionary at ``layer``:
    the Cantor pairing (L+i)(L+i+1)/2 + i."""
    if layer < 0 or index < 0:
        raise ValueError(f"Cantor ids need layer and index >= 0, got {layer}, {index}")
    s = layer + index
    return s * (s + 1) // 2 + index


def uncantor(feature: int) -> tuple[int, int]:
    """``(layer, index)`` of a Cantor feature id (the inverse of :func:`cantor`)."""
    if feature < 0:
        raise ValueError(f"a Cantor id is >= 0, got {feature}")
    w = (isqrt(8 * feature + 1) - 1) // 2  # exact integer square root: no float rounding
    index = feature - w * (w + 1) // 2
    return w - index, index


# Node kinds featuregraph distinguishes; every feature_type not named here is a feature of some
# dictionary (residual or attention SAE, transcoder, cross-layer transcoder, ...).
_KIND_OF_TYPE = {
    "embedding": "embedding",
    "logit": "logit",
    "bias": "bias",
    "mlp reconstruction error": "error",
    "lorsa error": "error",
}


def node_kind(feature_type: str) -> str:
    """``feature``, ``embedding``, ``error``, ``logit`` or ``bias`` of a node's ``feature_type``."""
    t = feature_type.strip().lower()
    if t in _KIND_OF_TYPE:
        return _KIND_OF_TYPE[t]
    if "error" in t:
        return "error"
    return "feature"


def layer_number(layer: int | str) -> int | None:
    """The layer as a number (``"12"`` -> 12), None for a label such as ``"E"``."""
    if isinstance(layer, int):
        return layer
    text = layer.strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else None


# {L}_{idx}_{pos}; {L}_{infix}_{idx}_{pos}: Neuronpedia's {L}_cro_..., featuregraph's {L}_att_... etc.
_FEATURE_NODE_ID = re.compile(r"^(\d+)_(?:([a-z]+)_)?(\d+)_(\d+)$")
_TOKEN_NODE_ID = re.compile(r"^[^_]+_(\d+)_(\d+)$")  # E_{vocab}_{pos}, {nL+1}_{vocab}_{pos}


def feature_index(node: GraphNode, layer: int, cantor_ids: bool) -> int:
    """The dictionary unit of a feature node at ``layer``: from a node_id of the form
    ``{L}_{idx}_{pos}`` when it names this layer and position, else from ``feature``
    (Cantor-decoded when the file uses Cantor ids). Raises ValueError when they disagree."""
    m = _FEATURE_NODE_ID.match(node.node_id)
    if m and int(m.group(1)) == layer and int(m.group(4)) == node.ctx_idx:
        index = int(m.group(3))
        if cantor_ids and node.feature is not None and node.feature != cantor(layer, index):
            raise ValueError(
                f"node {node.node_id!r}: feature {node.feature} is not the Cantor id of layer {layer} index {index}"
            )
        return index
    if node.feature is None:
        raise ValueError(f"feature node {node.node_id!r} has no feature id")
    if not cantor_ids:
        return node.feature
    got_layer, index = uncantor(node.feature)
    if got_layer != layer:
        raise ValueError(
            f"node {node.node_id!r}: Cantor id {node.feature} is of layer {got_layer}, not {layer}"
        )
    return index


# featuregraph's node-id infix of each site (its exports: {L}_att_{idx}_{pos}; residual: no infix).
SITE_INFIX = {"resid": "res", "attn_z": "att", "mlp_out": "mlp", "transcoder": "tc"}
_SITE_OF_INFIX = {infix: site for site, infix in SITE_INFIX.items()}
# The feature_type featuregraph writes per site. Residual features keep circuit-tracer's type, which
# the viewers expect of a feature; any other type also gets feature details in Neuronpedia.
SITE_FEATURE_TYPE = {
    "resid": "cross layer transcoder", "attn_z": "attention sae", "mlp_out": "mlp sae", "transcoder": "transcoder",
}  # fmt: skip


def feature_site(node: GraphNode, layer: int, featuregraph_file: bool) -> str:
    """The site kind (store/models.py SITE_CODES) of a feature node at ``layer``.

    A featuregraph node id names it (``{L}_att_{idx}_{pos}``; no infix: residual). Otherwise
    a featuregraph file's features are residual, and another file's ``feature_type`` decides:
    a transcoder (circuit-tracer's ``cross layer transcoder`` included: it reads the MLP input
    and writes MLP outputs) -> ``transcoder``; attention (``attention ...``, ``lorsa``) ->
    ``attn_z``; another MLP type -> ``mlp_out``; anything else (an SAE type, unknown) -> ``resid``.
    """
    m = _FEATURE_NODE_ID.match(node.node_id)
    if m and m.group(2) in _SITE_OF_INFIX and int(m.group(1)) == layer and int(m.group(4)) == node.ctx_idx:
        return _SITE_OF_INFIX[m.group(2)]
    if featuregraph_file:
        return "resid"
    t = node.feature_type.strip().lower()
    if "transcoder" in t:
        return "transcoder"
    if "attention" in t or "attn" in t or "lorsa" in t:
        return "attn_z"
    if "mlp" in t:
        return "mlp_out"
    return "resid"


def token_id_of(node: GraphNode, kind: str) -> int | None:
    """The vocabulary id of a logit node (its ``feature``) or an embedding node (from its
    node_id ``E_{vocab}_{pos}``); None when the node does not say."""
    if kind == "logit" and node.feature is not None:
        return node.feature
    if kind in ("logit", "embedding"):
        m = _TOKEN_NODE_ID.match(node.node_id)
        if m and int(m.group(2)) == node.ctx_idx:
            return int(m.group(1))
    return None


def logit_probability(node: GraphNode) -> float | None:
    """A logit node's clean probability: ``token_prob``, else the ``(p=...)`` of its clerp."""
    if node.token_prob is not None:
        return node.token_prob
    m = re.search(r"\(p=([0-9.eE+-]+)\)", node.clerp)
    try:
        return float(m.group(1)) if m else None
    except ValueError:
        return None


__all__ = [
    "GRAPH_SCHEMA_VERSION", "NEURONPEDIA_MAX_BYTES", "GraphFile", "GraphNode", "GraphLink", "Metadata", "QParams",
    "FeatureDetails", "Info", "Generator", "PruningSettings", "GenerationSettings", "validation_reason", "cantor",
    "uncantor", "node_kind", "layer_number", "feature_index", "feature_site", "SITE_INFIX", "SITE_FEATURE_TYPE", "token_id_of", "logit_probability",
]  # fmt: skip
