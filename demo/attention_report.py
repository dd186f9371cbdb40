"""What the demo's attention-output SAEs show on the IOI prompts (issue: sites beyond the residual).

Read from a mixed-site run (residual + ``blocks.L.attn.hook_z`` SAEs) that has DFA rows
(``featuregraph dfa``, docs/method.md#direct-feature-attribution):

1. **Which attention features move the indirect object's name**: per attention feature, the
   change of the answer's log-probability when it is ablated (``logit_effects`` rows of the
   answer token, ablated minus clean), summed over the IOI prompts. The sweep keeps each
   ablation's ten largest rises and ten largest falls of probability; the answer holds most of
   the probability mass, so a feature that lowers it noticeably has the answer among its falls.
   A prompt without a stored row for the answer counts as zero change (the sum is then a bound
   on a tiny remainder, said in ``n_stored``).
2. **Which heads, and whether DFA points at the name**: for each such feature, its DFA parts at
   the read position summed by head, and the share of its positive head-by-source parts that
   sits at a source position holding the answer's token (the indirect object's earlier mention),
   next to the share a uniform spread over the prompt's positions would give.
"""

from __future__ import annotations

from typing import Any

from featuregraph.store.db import Database

# The IOI prompts of the run with their answer's token (the prompt file's `answer`, one token).
_ANSWERS = """
answers AS (
    SELECT p.prompt_id, v.token_id AS answer_id, p.n_tokens
    FROM prompts p
    JOIN vocab v ON v.run_id = p.run_id AND v.token = json_extract_string(p.metadata, '$.answer')
    WHERE p.run_id = $run AND p.tag = $tag
)"""

#: Attention features ranked by the summed answer log-prob change of their ablation (most negative first).
ATTENTION_ANSWER_EFFECTS = f"""
WITH {_ANSWERS},
effects AS (
    SELECT l.layer, l.feature, l.prompt_id, l.dlogp
    FROM logit_effects l JOIN answers a ON a.prompt_id = l.prompt_id AND a.answer_id = l.token_id
    WHERE l.run_id = $run AND fg_feature_site(l.feature) = 'attn_z'
),
ablated AS (
    SELECT b.layer, b.feature, count(*) AS n_ablated
    FROM ablations b JOIN answers a ON a.prompt_id = b.prompt_id
    WHERE b.run_id = $run AND fg_feature_site(b.feature) = 'attn_z'
    GROUP BY ALL
)
SELECT fg_node(e.layer, e.feature) AS feature, e.layer, e.feature AS feature_key,
       (SELECT count(*) FROM answers) AS n_prompts, b.n_ablated, count(*) AS n_stored,
       sum(e.dlogp) AS sum_dlogp, median(e.dlogp) AS median_stored_dlogp
FROM effects e JOIN ablated b USING (layer, feature)
GROUP BY ALL
ORDER BY sum_dlogp, feature_key
LIMIT $top
"""

#: One attention feature's DFA over the IOI prompts: by head, and the share at the answer's positions.
DFA_HEADS = f"""
WITH {_ANSWERS}
SELECT d.head, count(DISTINCT d.prompt_id) AS n_prompts, sum(d.value) AS sum_value
FROM dfa_parts d JOIN answers a ON a.prompt_id = d.prompt_id
WHERE d.run_id = $run AND d.layer = $layer AND d.feature = $feature
  AND d.method = 'dfa' AND d.term = 'head_source'
GROUP BY d.head
ORDER BY sum_value DESC
"""

DFA_NAME_SHARE = f"""
WITH {_ANSWERS},
name_positions AS (
    SELECT t.prompt_id, t.position
    FROM tokens t JOIN answers a ON a.prompt_id = t.prompt_id AND a.answer_id = t.token_id
    WHERE t.run_id = $run
),
parts AS (
    SELECT d.prompt_id, d.value, n.position IS NOT NULL AS at_name
    FROM dfa_parts d
    JOIN answers a ON a.prompt_id = d.prompt_id
    LEFT JOIN name_positions n ON n.prompt_id = d.prompt_id AND n.position = d.source_position
    WHERE d.run_id = $run AND d.layer = $layer AND d.feature = $feature
      AND d.method = 'dfa' AND d.term = 'head_source' AND d.value > 0
),
uniform AS (
    -- A part spread evenly over the positions before the read position would put this share at the name.
    SELECT avg((SELECT count(*) FROM name_positions n WHERE n.prompt_id = a.prompt_id) / a.n_tokens) AS share
    FROM answers a WHERE a.prompt_id IN (SELECT prompt_id FROM parts)
)
SELECT count(DISTINCT prompt_id) AS n_prompts,
       sum(value) FILTER (WHERE at_name) / sum(value) AS name_share,
       (SELECT share FROM uniform) AS uniform_share
FROM parts
"""


def ioi_attention_report(db: Database, run_id: int, tag: str = "ioi", top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` attention features whose ablation lowers the IOI answer most (summed log-prob
    change, nats, ablated minus clean), each with its heads (summed DFA head-by-source parts,
    largest first) and the share of its positive DFA parts at the answer name's earlier positions."""
    rows = db.fetchall(ATTENTION_ANSWER_EFFECTS, {"run": run_id, "tag": tag, "top": top})
    out = []
    for name, layer, key, n_prompts, n_ablated, n_stored, sum_dlogp, median_stored in rows:
        params = {"run": run_id, "tag": tag, "layer": layer, "feature": key}
        heads = db.fetchall(DFA_HEADS, params)
        n_dfa, name_share, uniform = db.fetchone(DFA_NAME_SHARE, params)
        out.append({
            "feature": name, "n_prompts": int(n_prompts), "n_ablated": int(n_ablated), "n_stored": int(n_stored),
            "mean_dlogp": float(sum_dlogp) / int(n_prompts), "median_stored_dlogp": float(median_stored),
            "heads": [(int(h), float(v)) for h, _, v in heads],
            "dfa_prompts": int(n_dfa or 0),
            "name_share": None if name_share is None else float(name_share),
            "uniform_share": None if uniform is None else float(uniform),
        })  # fmt: skip
    return out


def format_report(rows: list[dict[str, Any]]) -> list[str]:
    """Lines for the terminal: one per feature."""
    if not rows:
        return ["  no attention feature's ablation stored a change of the answer"]
    lines = []
    for r in rows:
        heads = ", ".join(f"h{h} {v:+.2f}" for h, v in r["heads"][:3]) or "no DFA rows"
        share = (
            f"{100 * r['name_share']:.0f}% of its positive DFA at the name's earlier position "
            f"(uniform: {100 * r['uniform_share']:.0f}%)" if r["name_share"] is not None else "no DFA rows"
        )  # fmt: skip
        lines.append(
            f"  {r['feature']:>14}  answer log-prob {r['mean_dlogp']:+.3f} per prompt (ablated in "
            f"{r['n_ablated']}/{r['n_prompts']}, stored {r['n_stored']}); heads {heads}; {share}"
        )
    return lines


__all__ = ["ATTENTION_ANSWER_EFFECTS", "DFA_HEADS", "DFA_NAME_SHARE", "format_report", "ioi_attention_report"]
