"""Other spellings of an exported graph: GraphML (networkx, Gephi) and JSON lines.

GraphML: one ``<node>`` per graph node (id = node_id) with the node's scalar fields as data
keys, one ``<edge>`` per link with its ``weight`` (the file's sign: positive promotes), and
the prompt as graph data; ``networkx.read_graphml`` reads it back. JSON lines: a first line
``{"type": "metadata", ...}``, then one ``{"type": "node", ...}`` per node and one
``{"type": "link", ...}`` per link, each the graph file's own object.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

from featuregraph.store.graph_model import GraphFile

_NS = "http://graphml.graphdrawing.org/xmlns"
# GraphML attribute types of the node fields written (others are skipped: lists, objects).
_NODE_KEYS = {
    "feature": "long", "layer": "string", "ctx_idx": "int", "feature_type": "string", "jsNodeId": "string",
    "clerp": "string", "influence": "double", "activation": "double", "token_prob": "double",
    "is_target_logit": "boolean",
}  # fmt: skip


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_graphml(graph: GraphFile) -> bytes:
    """The graph as GraphML (directed; see the module doc)."""
    root = ET.Element("graphml", xmlns=_NS)
    for name, kind in _NODE_KEYS.items():
        ET.SubElement(root, "key", {"id": name, "for": "node", "attr.name": name, "attr.type": kind})
    ET.SubElement(root, "key", {"id": "weight", "for": "edge", "attr.name": "weight", "attr.type": "double"})
    ET.SubElement(root, "key", {"id": "prompt", "for": "graph", "attr.name": "prompt", "attr.type": "string"})
    g = ET.SubElement(root, "graph", id=graph.metadata.slug, edgedefault="directed")
    ET.SubElement(g, "data", key="prompt").text = graph.metadata.prompt
    for node in graph.nodes:
        el = ET.SubElement(g, "node", id=node.node_id)
        for name in _NODE_KEYS:
            value = getattr(node, name)
            if value is not None:
                ET.SubElement(el, "data", key=name).text = _text(value)
    for link in graph.links:
        el = ET.SubElement(g, "edge", source=link.source, target=link.target)
        ET.SubElement(el, "data", key="weight").text = repr(float(link.weight))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def to_json_lines(graph: GraphFile) -> bytes:
    """The graph as JSON lines (see the module doc)."""
    doc = graph.dump()
    lines = [{"type": "metadata", **doc["metadata"]}]
    lines += [{"type": "node", **n} for n in doc["nodes"]]
    lines += [{"type": "link", **link} for link in doc["links"]]
    return ("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n").encode("utf-8")


__all__ = ["to_graphml", "to_json_lines"]
