-- featuregraph schema, step 18: a feature's neighbourhood reads the base and the delta tables,
-- not the edge_summary view; a compaction updates the pair index rather than counting it again.
--
-- chain_pair_floors.full_floor: the floor the run's last full count of 2-chains chose. A
-- compaction now updates the index from its old rows and the delta's 2-chains
-- (store/chain_pairs.py, update_pairs), and may raise the floor a little to keep that update
-- cheap; it counts in full again once the floor would pass full_floor by a quarter. NULL on
-- rows written before this step: their floor is the full count's.
ALTER TABLE chain_pair_floors ADD COLUMN full_floor INTEGER;

--
-- feature_edges (0003) keeps its parameters, columns, rows and order. It adds up n, the sums
-- and the sums of squares of every signed edge to or from `node`, per neighbour, and those
-- totals are sums over prompts: the base's rows and the delta's rows can be added as they come,
-- with no join between them. Through the view, each call aggregated the whole delta and joined
-- it to the base (the view's LEFT JOIN and ANTI JOIN). Here each part is filtered on the feature
-- first: the base through its Z-order (0017), the delta by a scan of its rows, which a
-- compaction keeps to a fraction of the base.
--
-- feature_edges_at / feature_logits_at take the node as its layer and stored (site-encoded)
-- feature: the Python API, which has parsed the name already, calls them. Planning
-- fg_layer(node) and fg_feature(node) (0014: a name's site parsed in SQL) at each of their
-- uses cost more than running the query at 500 M edges: 45 ms per call against 20 ms.
-- feature_edges and feature_logits keep their signatures and call them.
CREATE MACRO feature_edges_at(at_layer, at_feature, run := NULL, top := 20, min_count := 1) AS TABLE
WITH sides AS (
    SELECT 'out' AS direction, run_id, down_layer AS layer, down_feature AS feature, sign, n,
           sum_weight::DOUBLE AS sum_weight, sum_sq_weight::DOUBLE AS sum_sq_weight
    FROM edge_summary_base
    WHERE up_layer = at_layer AND up_feature = at_feature AND (run IS NULL OR run_id = run)
    UNION ALL
    SELECT 'in', run_id, up_layer, up_feature, sign, n, sum_weight::DOUBLE, sum_sq_weight::DOUBLE
    FROM edge_summary_base
    WHERE down_layer = at_layer AND down_feature = at_feature AND (run IS NULL OR run_id = run)
    UNION ALL
    SELECT 'out', run_id, down_layer, down_feature, sign, 1, weight::DOUBLE, weight::DOUBLE * weight::DOUBLE
    FROM edge_delta
    WHERE up_layer = at_layer AND up_feature = at_feature AND (run IS NULL OR run_id = run)
    UNION ALL
    SELECT 'in', run_id, up_layer, up_feature, sign, 1, weight::DOUBLE, weight::DOUBLE * weight::DOUBLE
    FROM edge_delta
    WHERE down_layer = at_layer AND down_feature = at_feature AND (run IS NULL OR run_id = run)
),
agg AS (
    SELECT run_id, direction, layer, feature,
           sum(n)::BIGINT AS n,
           coalesce(sum(n) FILTER (WHERE sign > 0), 0)::BIGINT AS n_pos,
           coalesce(sum(n) FILTER (WHERE sign < 0), 0)::BIGINT AS n_neg,
           sum(sum_weight) AS s, sum(sum_sq_weight) AS ss
    FROM sides
    GROUP BY run_id, direction, layer, feature
    HAVING sum(n) >= min_count
)
SELECT run_id, direction, fg_node(layer, feature) AS neighbour, layer, feature, n, n_pos, n_neg,
       s / n AS mean_weight,
       CASE WHEN n > 1 THEN sqrt(greatest((ss - s * s / n) / (n - 1), 0)) END AS std_weight,
       greatest(n_pos, n_neg) / n AS sign_consistency
FROM agg
QUALIFY top IS NULL
     OR row_number() OVER (PARTITION BY run_id, direction ORDER BY n DESC, abs(s / n) DESC, layer, feature) <= top
ORDER BY run_id, direction DESC, n DESC, abs(s / n) DESC, layer, feature;

CREATE OR REPLACE MACRO feature_edges(node, run := NULL, top := 20, min_count := 1) AS TABLE
SELECT * FROM feature_edges_at(fg_layer(node), fg_feature(node), run := run, top := top, min_count := min_count);

CREATE MACRO feature_logits_at(at_layer, at_feature, run := NULL, top := 10) AS TABLE
WITH le AS (
    SELECT run_id, prompt_id, token_id, dlogp, dprob
    FROM logit_effects
    WHERE layer = at_layer AND feature = at_feature AND (run IS NULL OR run_id = run)
),
per_token AS (
    SELECT run_id, token_id, count(*) AS n_prompts,
           max(n_ablations) AS n_ablations,
           sum(dlogp) / max(n_ablations) AS mean_dlogp,
           sum(dprob) / max(n_ablations) AS mean_dprob
    FROM (SELECT *, count(DISTINCT prompt_id) OVER (PARTITION BY run_id) AS n_ablations FROM le)
    GROUP BY run_id, token_id
    HAVING sum(dprob) <> 0
    QUALIFY row_number() OVER (PARTITION BY run_id, sum(dprob) > 0 ORDER BY abs(sum(dprob)) DESC, token_id) <= top
)
SELECT t.run_id, CASE WHEN t.mean_dprob > 0 THEN 'promoted' ELSE 'suppressed' END AS direction,
       row_number() OVER (PARTITION BY t.run_id, t.mean_dprob > 0 ORDER BY abs(t.mean_dprob) DESC, t.token_id)
           AS token_rank,
       t.token_id, v.token, t.n_prompts, t.n_ablations, t.mean_dlogp, t.mean_dprob
FROM per_token t
LEFT JOIN vocab v ON v.run_id = t.run_id AND v.token_id = t.token_id
ORDER BY t.run_id, direction, token_rank;

CREATE OR REPLACE MACRO feature_logits(node, run := NULL, top := 10) AS TABLE
SELECT * FROM feature_logits_at(fg_layer(node), fg_feature(node), run := run, top := top);
