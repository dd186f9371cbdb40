"""What a prompt's strongest edges are: a downstream feature switching on or off, or a graded change.

An edge's weight is ``act_d(u ablated) - act_d(clean)`` at the read position
(docs/method.md). With the clean activation ``a`` of the downstream feature:

* ``enters``: ``a = 0`` (not active in the clean run) and the ablation turns it on;
* ``leaves``: ``a > 0`` and the ablation turns it off (``a + weight = 0``);
* ``graded``: active before and after, its activation moved.

With a TopK SAE most strong edges were ``enters``/``leaves`` (top-k selection flips);
a ReLU SAE's edges can be graded, which is what a reader of a weight usually assumes.
"""

from __future__ import annotations

__all__ = ["EDGE_KINDS", "edge_kinds"]

#: Per tag: how many of each prompt's ``top_n`` strongest edges (by |weight|) are of each kind.
#: A feature counts as switched off when ``a + weight`` is within float32 rounding of 0.
#: Named parameters: ``run``, ``top_n``.
EDGE_KINDS = """
WITH read_at AS (
    SELECT prompt_id, max(position) AS position FROM activations WHERE run_id = $run GROUP BY prompt_id
), ranked AS (
    SELECT e.prompt_id, e.down_layer, e.down_feature, e.weight,
           row_number() OVER (PARTITION BY e.prompt_id ORDER BY abs(e.weight) DESC, e.up_layer, e.up_feature,
                              e.down_layer, e.down_feature) AS rank
    FROM edges e WHERE e.run_id = $run
), strongest AS (
    SELECT r.*, p.tag, coalesce(a.activation, 0) AS clean
    FROM ranked r
    JOIN prompts p ON p.run_id = $run AND p.prompt_id = r.prompt_id
    JOIN read_at ra ON ra.prompt_id = r.prompt_id
    LEFT JOIN activations a ON a.run_id = $run AND a.prompt_id = r.prompt_id AND a.position = ra.position
        AND a.layer = r.down_layer AND a.feature = r.down_feature
    WHERE r.rank <= $top_n
)
SELECT tag,
       count(*) AS edges,
       count(*) FILTER (WHERE clean = 0) AS enters,
       count(*) FILTER (WHERE clean > 0 AND abs(clean + weight) <= 1e-5 * greatest(1, clean)) AS leaves,
       count(*) FILTER (WHERE clean > 0 AND abs(clean + weight) > 1e-5 * greatest(1, clean)) AS graded
FROM strongest GROUP BY tag ORDER BY tag
"""


def edge_kinds(db, run_id: int, top_n: int = 30) -> list[dict]:
    """Per tag, the kinds of each prompt's ``top_n`` strongest edges (see :data:`EDGE_KINDS`):
    ``{"tag", "edges", "enters", "leaves", "graded"}`` (counts over the tag's prompts)."""
    cols = ("tag", "edges", "enters", "leaves", "graded")
    rows = db.fetchall(EDGE_KINDS, {"run": run_id, "top_n": top_n})
    return [dict(zip(cols, r, strict=True)) for r in rows]
