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
-- it to the base (the view's LEFT JOIN and ANTI JOIN), which at 500 M edges was most of a
-- neighbourhood's 73-79 ms even with an empty delta. Here each part is filtered on the feature
-- first: the base through its Z-order (0017), the delta by a scan of its rows, which a
-- compaction keeps to a fraction of the base.
CREATE OR REPLACE MACRO feature_edges(node, run := NULL, top := 20, min_count := 1) AS TABLE
WITH sides AS (
    SELECT 'out' AS direction, run_id, down_layer AS layer, down_feature AS feature, sign, n,
           sum_weight::DOUBLE AS sum_weight, sum_sq_weight::DOUBLE AS sum_sq_weight
    FROM edge_summary_base
    WHERE up_layer = fg_layer(node) AND up_feature = fg_feature(node) AND (run IS NULL OR run_id = run)
    UNION ALL
    SELECT 'in', run_id, up_layer, up_feature, sign, n, sum_weight::DOUBLE, sum_sq_weight::DOUBLE
    FROM edge_summary_base
    WHERE down_layer = fg_layer(node) AND down_feature = fg_feature(node) AND (run IS NULL OR run_id = run)
    UNION ALL
    SELECT 'out', run_id, down_layer, down_feature, sign, 1, weight::DOUBLE, weight::DOUBLE * weight::DOUBLE
    FROM edge_delta
    WHERE up_layer = fg_layer(node) AND up_feature = fg_feature(node) AND (run IS NULL OR run_id = run)
    UNION ALL
    SELECT 'in', run_id, up_layer, up_feature, sign, 1, weight::DOUBLE, weight::DOUBLE * weight::DOUBLE
    FROM edge_delta
    WHERE down_layer = fg_layer(node) AND down_feature = fg_feature(node) AND (run IS NULL OR run_id = run)
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
