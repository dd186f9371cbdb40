"""Direct feature attribution of an attention feature, for its page: the prompts it was
decomposed in and one prompt's parts (tables dfa_features / dfa_parts, docs/method.md#direct-feature-attribution).

A part is a contribution to the feature's pre-activation: removing it, with the attention
pattern and ln1 scale frozen, changes the pre-activation by minus the part.
"""

from __future__ import annotations

import polars as pl

from featuregraph.query.api import fetch, parse_node
from featuregraph.store.db import Database, QueryLimits
from featuregraph.store.models import Node

FEATURE_DFA_PROMPTS = """
SELECT f.prompt_id, f.position, f.activation, f.pre_activation, f.resid_layer, p.text
FROM dfa_features f JOIN prompts p ON p.run_id = f.run_id AND p.prompt_id = f.prompt_id
WHERE f.run_id = $run AND f.layer = $layer AND f.feature = $feature
ORDER BY f.activation DESC, f.prompt_id
LIMIT $top
"""
FEATURE_DFA_PARTS = """
SELECT d.method, d.term, d.head, d.source_position, t.token AS source_token,
       CASE WHEN d.up_feature IS NULL THEN NULL ELSE d.up_layer || '.' || d.up_feature END AS up,
       d.value
FROM dfa_parts d
LEFT JOIN tokens t ON t.run_id = d.run_id AND t.prompt_id = d.prompt_id AND t.position = d.source_position
WHERE d.run_id = $run AND d.prompt_id = $prompt AND d.layer = $layer AND d.feature = $feature
ORDER BY d.method, d.head NULLS LAST, d.source_position NULLS LAST, abs(d.value) DESC
"""


def feature_dfa_prompts(
    db: Database, node: str | Node, run: int, top: int = 50, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """Prompts in which the feature's DFA is stored, the most active first: read position,
    activation, pre-activation, the residual layer recursed into (NULL: none)."""
    node = parse_node(node)
    return fetch(
        db,
        FEATURE_DFA_PROMPTS,
        {"run": run, "layer": node.layer, "feature": node.feature, "top": top},
        limits,
    )


def feature_dfa_parts(
    db: Database, node: str | Node, run: int, prompt: int, limits: QueryLimits | None = None
) -> pl.DataFrame:
    """The feature's stored DFA parts in one prompt: method 'dfa' (head_source parts with the
    source token, rest, encoder_bias, decoder_bias: they sum to the pre-activation) and
    'dfa_resid' (per recursed head and source: residual features `up`, rest, error,
    decoder_bias, bias: they sum to that head-source part)."""
    node = parse_node(node)
    params = {"run": run, "prompt": prompt, "layer": node.layer, "feature": node.feature}
    return fetch(db, FEATURE_DFA_PARTS, params, limits)


__all__ = ["feature_dfa_parts", "feature_dfa_prompts"]
