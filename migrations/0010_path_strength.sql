-- featuregraph schema, step 10: strength-aware path ranking.
--
-- An edge occurrence counts towards a path's support only if it is strong enough, by its
-- size relative to the largest effect of the same ablation, or by its significance against a
-- noise experiment's null distribution. docs/sql.md documents the parameters and columns.

-- The largest |weight| of each ablation (run, prompt, up_layer, up_feature), beside every
-- occurrence the path macros read: edge_occurrences.ablation_max_abs for its rows, and
-- edge_summary.first_ablation_max_abs for the occurrence in first_prompt_id (the only one
-- while n = 1). The ingest writes both (store/summary.py); old databases are backfilled here.
ALTER TABLE edge_summary ADD COLUMN first_ablation_max_abs REAL;
ALTER TABLE edge_occurrences ADD COLUMN ablation_max_abs REAL;

CREATE TEMP TABLE __fg_ablation_max AS
SELECT run_id, prompt_id, up_layer, up_feature, max(abs(weight)) AS max_abs
FROM edges GROUP BY ALL;

UPDATE edge_occurrences SET ablation_max_abs = m.max_abs
FROM __fg_ablation_max m
WHERE m.run_id = edge_occurrences.run_id AND m.prompt_id = edge_occurrences.prompt_id
  AND m.up_layer = edge_occurrences.up_layer AND m.up_feature = edge_occurrences.up_feature;

UPDATE edge_summary SET first_ablation_max_abs = m.max_abs
FROM __fg_ablation_max m
WHERE m.run_id = edge_summary.run_id AND m.prompt_id = edge_summary.first_prompt_id
  AND m.up_layer = edge_summary.up_layer AND m.up_feature = edge_summary.up_feature;

DROP TABLE __fg_ablation_max;

-- Strength filters ---------------------------------------------------------------------------

-- The edge null samples of one noise experiment per run: `experiment`, or (NULL) the latest
-- complete noise experiment of each run; nothing at all while max_p is NULL (no filter). A
-- closing row per feature (value +inf, n_ge 0) makes an ASOF join on value >= |weight| find
-- every baselined feature: p_value = (1 + n_ge) / (1 + n_samples) of the smallest null value
-- >= |weight|, and no match means the feature has no null (never active in the noise: no p).
CREATE MACRO fg_edge_nulls(run, max_p, experiment) AS TABLE
WITH chosen AS (
    SELECT run_id, max(experiment_id) AS experiment_id
    FROM experiments
    WHERE max_p IS NOT NULL AND kind = 'noise' AND status = 'complete'
      AND (run IS NULL OR run_id = run) AND (experiment IS NULL OR experiment_id = experiment)
    GROUP BY run_id
),
baselined AS (
    SELECT f.run_id, f.experiment_id, f.layer, f.feature, f.n_samples
    FROM noise_features f
    JOIN chosen c ON c.run_id = f.run_id AND c.experiment_id = f.experiment_id
    WHERE f.n_samples > 0
)
SELECT b.run_id, b.layer, b.feature, n.value, n.n_ge, b.n_samples
FROM noise_null n
JOIN baselined b ON b.run_id = n.run_id AND b.experiment_id = n.experiment_id AND b.layer = n.layer
 AND b.feature = n.feature
WHERE n.kind = 'edge'
UNION ALL
SELECT run_id, layer, feature, CAST('inf' AS REAL), 0, n_samples FROM baselined;

-- Whether an edge occurrence passes the filters: |weight| >= min_weight, |weight| >=
-- min_rel_weight x its ablation's largest |weight|, and (max_p set) a p_value below max_p
-- (an occurrence without one fails).
CREATE MACRO fg_strong(weight, ablation_max_abs, p_value, min_weight, min_rel_weight, max_p) AS
    abs(weight) >= min_weight
    AND (min_rel_weight = 0 OR coalesce(abs(weight::DOUBLE) >= min_rel_weight::DOUBLE * ablation_max_abs::DOUBLE, false))
    AND (max_p IS NULL OR coalesce(p_value < max_p, false));

-- Recurring paths across prompts -----------------------------------------------------------
-- As in 0003_query_macros.sql, with strength filters applied to each edge occurrence before
-- support is counted: min_rel_weight (0: off) and max_p / experiment (NULL: off), beside
-- min_weight. support counts the prompts in which every edge of the chain passes them;
-- support_any the prompts with the chain at all (no min_weight, no filter), for the chains
-- whose support reaches min_support; mean_weights are over the supporting prompts.
-- Occurrences failing a filter are kept (flagged) for support_any; candidate edges and the
-- pruning of longer chains use the filtered counts, so a chain is extended only while it and
-- its tail are strong in min_support prompts. (Also fixed here: an edge that skips a layer,
-- u -> layer + 2, was read as the step u -> layer + 1 to the same feature index.)
CREATE OR REPLACE MACRO recurring_paths(n_edges := 3, min_support := 2, run := NULL, min_layer := NULL,
                                        max_layer := NULL, sign_pattern := NULL, min_weight := 0,
                                        prompt_tag := NULL, min_rel_weight := 0, max_p := NULL,
                                        experiment := NULL) AS TABLE
WITH RECURSIVE
frequent AS MATERIALIZED (
    SELECT run_id, up_layer, up_feature, down_feature, sign, n_sorted
    FROM edge_summary
    WHERE n >= greatest(min_support, 2) AND down_layer = up_layer + 1
      AND (run IS NULL OR run_id = run)
      AND (min_layer IS NULL OR up_layer >= min_layer)
      AND (max_layer IS NULL OR down_layer <= max_layer)
      AND CASE WHEN n_edges BETWEEN 2 AND 6 THEN true
               ELSE error('n_edges must be between 2 and 6, got ' || n_edges) END
),
-- depth: edges of the longest chain of candidates ending at (into_node) / starting from
-- (out_of) a node, counted up to n_edges - 1.
into_node(run_id, layer, feature, depth) AS (
    SELECT DISTINCT run_id, up_layer, up_feature, 0 FROM frequent
    UNION
    SELECT f.run_id, f.up_layer + 1, f.down_feature, p.depth + 1
    FROM into_node p JOIN frequent f ON f.run_id = p.run_id AND f.up_layer = p.layer AND f.up_feature = p.feature
    WHERE p.depth + 1 < n_edges
),
out_of(run_id, layer, feature, depth) AS (
    SELECT DISTINCT run_id, up_layer + 1, down_feature, 0 FROM frequent
    UNION
    SELECT f.run_id, f.up_layer, f.up_feature, p.depth + 1
    FROM out_of p JOIN frequent f ON f.run_id = p.run_id AND f.up_layer + 1 = p.layer AND f.down_feature = p.feature
    WHERE p.depth + 1 < n_edges
),
useful_edges AS MATERIALIZED (
    SELECT f.*
    FROM frequent f
    JOIN (SELECT run_id, layer, feature, max(depth) AS depth FROM into_node GROUP BY ALL) b
      ON b.run_id = f.run_id AND b.layer = f.up_layer AND b.feature = f.up_feature
    JOIN (SELECT run_id, layer, feature, max(depth) AS depth FROM out_of GROUP BY ALL) a
      ON a.run_id = f.run_id AND a.layer = f.up_layer + 1 AND a.feature = f.down_feature
    WHERE b.depth + 1 + a.depth >= n_edges
),
nodes AS MATERIALIZED (
    SELECT run_id, layer, feature, row_number() OVER (ORDER BY run_id, layer, feature) AS node
    FROM (SELECT run_id, up_layer AS layer, up_feature AS feature FROM useful_edges
          UNION SELECT run_id, up_layer + 1, down_feature FROM useful_edges)
),
-- eid: a dense id per candidate signed edge (a chain packs its edges' ids, 17 bits each);
-- up_node / down_node: dense ids of its features (18 bits).
useful AS NOT MATERIALIZED (
    SELECT e.*,
           CAST(CASE WHEN count(*) OVER () < 131072
                     THEN row_number() OVER (ORDER BY e.run_id, e.up_layer, e.up_feature, e.down_feature, e.sign)
                     ELSE error('more than 131071 candidate edges for recurring_paths; raise min_support or narrow the layers')
                END AS HUGEINT) AS eid,
           nu.node AS up_node, nd.node AS down_node
    FROM useful_edges e
    JOIN nodes nu ON nu.run_id = e.run_id AND nu.layer = e.up_layer AND nu.feature = e.up_feature
    JOIN nodes nd ON nd.run_id = e.run_id AND nd.layer = e.up_layer + 1 AND nd.feature = e.down_feature
),
lagging AS (
    SELECT *,
           CASE WHEN count(*) OVER () < 131072 THEN true
                ELSE error('more than 131071 candidate edges grew past min_support since the last optimize; '
                           || 'run featuregraph optimize on this database') END AS checked
    FROM useful
    WHERE n_sorted < greatest(min_support, 2)
),
-- (The LIMITs below cap the planner's size estimates of `useful`, which it cannot know, so
-- that hash tables are built on the candidates rather than on the occurrences.)
cand AS (SELECT * FROM useful LIMIT 131071),
-- The candidates' occurrences: rows sorted by the last optimize with n_sorted >= S (a prefix
-- of the table), rows written since (n_sorted NULL, at the end), and the rows of candidates
-- that had fewer than S prompts at the last optimize (none right after one).
occ_rows AS (
    SELECT o.*, u.eid, u.up_node, u.down_node
    FROM edge_occurrences o
    JOIN cand u ON u.run_id = o.run_id AND u.up_layer = o.up_layer AND u.up_feature = o.up_feature
               AND u.down_feature = o.down_feature AND u.sign = o.sign
    WHERE o.n_sorted >= greatest(min_support, 2) AND o.down_layer = o.up_layer + 1
    UNION ALL
    SELECT o.*, u.eid, u.up_node, u.down_node
    FROM edge_occurrences o
    JOIN cand u ON u.run_id = o.run_id AND u.up_layer = o.up_layer AND u.up_feature = o.up_feature
               AND u.down_feature = o.down_feature AND u.sign = o.sign
    WHERE o.n_sorted IS NULL AND o.down_layer = o.up_layer + 1
    UNION ALL
    SELECT o.*, u.eid, u.up_node, u.down_node
    FROM edge_occurrences o
    JOIN (SELECT * FROM lagging LIMIT 131071) u
      ON u.run_id = o.run_id AND u.n_sorted = o.n_sorted AND u.up_layer = o.up_layer
     AND u.up_feature = o.up_feature AND u.down_feature = o.down_feature AND u.sign = o.sign
    WHERE o.n_sorted < greatest(min_support, 2) AND o.down_layer = o.up_layer + 1
),
-- p-values only when max_p asks for them: the ASOF join sorts every occurrence.
scored AS (
    SELECT o.*, CAST(NULL AS DOUBLE) AS p_value FROM occ_rows o WHERE max_p IS NULL
    UNION ALL
    SELECT o.*, (1 + nn.n_ge) / (1 + nn.n_samples) AS p_value
    FROM occ_rows o
    ASOF LEFT JOIN fg_edge_nulls(run, max_p, experiment) nn
      ON nn.run_id = o.run_id AND nn.layer = o.up_layer AND nn.feature = o.up_feature AND abs(o.weight) <= nn.value
    WHERE max_p IS NOT NULL
),
occ AS MATERIALIZED (
    -- at_key / to_key: the edge's upstream / downstream feature in its prompt, packed in 63 bits;
    -- strong: the occurrence passes the strength filters (every occurrence is kept, for support_any)
    SELECT (CAST(o.run_id AS BIGINT) << 50) + (CAST(o.prompt_id AS BIGINT) << 18) + o.up_node AS at_key,
           (CAST(o.run_id AS BIGINT) << 50) + (CAST(o.prompt_id AS BIGINT) << 18) + o.down_node AS to_key,
           o.sign, o.eid, o.weight,
           fg_strong(o.weight, o.ablation_max_abs, o.p_value, min_weight, min_rel_weight, max_p) AS strong
    FROM scored o
    WHERE (run IS NULL OR o.run_id = run)
      AND (prompt_tag IS NULL OR (o.run_id, o.prompt_id) IN (
            SELECT (p.run_id, p.prompt_id) FROM prompts p WHERE p.tag = prompt_tag))
),
-- lK: the chains of K edges in each prompt (chain: packed edge ids; to_key: where it ends;
-- wI: the I-th weight); fK: the K-edge chains found in at least min_support prompts.
l1 AS (
    SELECT eid AS chain, to_key, strong, weight AS w1
    FROM occ
    WHERE coalesce(sign_pattern[1], 0) IN (0, sign)
),
l2 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.strong AND o.strong AS strong, c.w1, o.weight AS w2
    FROM l1 c
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 2 AND coalesce(sign_pattern[2], 0) IN (0, o.sign)
),
f2 AS (SELECT chain FROM l2 GROUP BY chain HAVING count(*) FILTER (WHERE strong) >= greatest(min_support, 2)),
l3 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.strong AND o.strong AS strong, c.w1, c.w2, o.weight AS w3
    FROM l2 c
    SEMI JOIN f2 f ON f.chain = c.chain
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 3 AND coalesce(sign_pattern[3], 0) IN (0, o.sign)
      AND ((c.chain & ((CAST(1 AS HUGEINT) << 17) - 1)) << 17) + o.eid IN (SELECT chain FROM f2)
),
f3 AS (SELECT chain FROM l3 GROUP BY chain HAVING count(*) FILTER (WHERE strong) >= greatest(min_support, 2)),
l4 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.strong AND o.strong AS strong, c.w1, c.w2, c.w3, o.weight AS w4
    FROM l3 c
    SEMI JOIN f3 f ON f.chain = c.chain
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 4 AND coalesce(sign_pattern[4], 0) IN (0, o.sign)
      AND ((c.chain & ((CAST(1 AS HUGEINT) << 34) - 1)) << 17) + o.eid IN (SELECT chain FROM f3)
),
f4 AS (SELECT chain FROM l4 GROUP BY chain HAVING count(*) FILTER (WHERE strong) >= greatest(min_support, 2)),
l5 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.strong AND o.strong AS strong, c.w1, c.w2, c.w3, c.w4, o.weight AS w5
    FROM l4 c
    SEMI JOIN f4 f ON f.chain = c.chain
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 5 AND coalesce(sign_pattern[5], 0) IN (0, o.sign)
      AND ((c.chain & ((CAST(1 AS HUGEINT) << 51) - 1)) << 17) + o.eid IN (SELECT chain FROM f4)
),
f5 AS (SELECT chain FROM l5 GROUP BY chain HAVING count(*) FILTER (WHERE strong) >= greatest(min_support, 2)),
l6 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.strong AND o.strong AS strong, c.w1, c.w2, c.w3, c.w4, c.w5, o.weight AS w6
    FROM l5 c
    SEMI JOIN f5 f ON f.chain = c.chain
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 6 AND coalesce(sign_pattern[6], 0) IN (0, o.sign)
      AND ((c.chain & ((CAST(1 AS HUGEINT) << 68) - 1)) << 17) + o.eid IN (SELECT chain FROM f5)
),
chains AS (
    SELECT chain, to_key, strong, w1, w2, CAST(NULL AS REAL) AS w3, CAST(NULL AS REAL) AS w4, CAST(NULL AS REAL) AS w5, CAST(NULL AS REAL) AS w6 FROM l2 WHERE n_edges = 2
    UNION ALL SELECT chain, to_key, strong, w1, w2, w3, CAST(NULL AS REAL) AS w4, CAST(NULL AS REAL) AS w5, CAST(NULL AS REAL) AS w6 FROM l3 WHERE n_edges = 3
    UNION ALL SELECT chain, to_key, strong, w1, w2, w3, w4, CAST(NULL AS REAL) AS w5, CAST(NULL AS REAL) AS w6 FROM l4 WHERE n_edges = 4
    UNION ALL SELECT chain, to_key, strong, w1, w2, w3, w4, w5, CAST(NULL AS REAL) AS w6 FROM l5 WHERE n_edges = 5
    UNION ALL SELECT chain, to_key, strong, w1, w2, w3, w4, w5, w6 FROM l6 WHERE n_edges = 6
),
counted AS MATERIALIZED (
    SELECT chain, count(DISTINCT to_key >> 18) FILTER (WHERE strong) AS support,
           count(DISTINCT to_key >> 18) AS support_any,
           [avg(w1) FILTER (WHERE strong), avg(w2) FILTER (WHERE strong), avg(w3) FILTER (WHERE strong),
            avg(w4) FILTER (WHERE strong), avg(w5) FILTER (WHERE strong),
            avg(w6) FILTER (WHERE strong)][1:n_edges] AS mean_weights
    FROM chains
    GROUP BY chain
    HAVING count(DISTINCT to_key >> 18) FILTER (WHERE strong) >= greatest(min_support, 2)
),
decoded AS (
    SELECT c.chain,
           first(u.run_id ORDER BY c.i) AS run_id,
           first(u.up_layer ORDER BY c.i) AS start_layer,
           list(u.up_feature ORDER BY c.i) AS ups,
           last(u.down_feature ORDER BY c.i) AS last_feature,
           list(u.sign ORDER BY c.i) AS signs
    FROM (SELECT chain, unnest(generate_series(1, n_edges)) AS i FROM counted) c
    JOIN useful u ON u.eid = (c.chain >> (17 * (n_edges - c.i))) & 131071
    GROUP BY c.chain
)
SELECT d.run_id,
       array_to_string(list_transform(list_append(d.ups, d.last_feature),
                                      lambda f, i: fg_node(d.start_layer + i - 1, f)), ' -> ') AS path,
       list_transform(list_append(d.ups, d.last_feature), lambda f, i: fg_node(d.start_layer + i - 1, f)) AS nodes,
       d.signs, c.support, c.support_any, c.mean_weights, d.start_layer,
       list_append(d.ups, d.last_feature) AS features
FROM counted c
JOIN decoded d ON d.chain = c.chain
ORDER BY c.support DESC, d.run_id, d.start_layer, features, d.signs;

-- Paths specific to one prompt tag -----------------------------------------------------------
-- The chains recurring_paths finds inside `tag` (same parameters and strength filters), each
-- counted in every tag of its run with the same filters: support (prompts of `tag` with the
-- chain), share = support / the tag's prompts, the largest share in any other tag
-- (other_share; other_tag names it, ties to the first tag by name; NULL and 0 where no other
-- tag has the chain) and specificity = share - other_share. Untagged prompts belong to no tag.
-- tag_supports lists every tag's (tag, support, n_prompts). The `top` most specific per run.
CREATE MACRO tag_specific_paths(tag, n_edges := 2, min_support := 2, run := NULL, min_weight := 0,
                                min_rel_weight := 0, max_p := NULL, experiment := NULL,
                                top := 20) AS TABLE
WITH
found AS MATERIALIZED (
    SELECT row_number() OVER () AS cid, *
    FROM recurring_paths(n_edges := n_edges, min_support := min_support, run := run,
                         min_weight := min_weight, prompt_tag := tag, min_rel_weight := min_rel_weight,
                         max_p := max_p, experiment := experiment)
),
steps AS MATERIALIZED (
    SELECT cid, run_id, CAST(start_layer + i - 1 AS SMALLINT) AS up_layer, features[i] AS up_feature,
           features[i + 1] AS down_feature, signs[i] AS sign
    FROM (SELECT cid, run_id, start_layer, features, signs, unnest(generate_series(1, n_edges)) AS i FROM found)
),
-- Every occurrence of the chains' edges (each occurs in >= 2 prompts, so all are in edge_occurrences).
occ AS (
    SELECT o.run_id, o.prompt_id, o.up_layer, o.up_feature, o.down_feature, o.sign, o.weight, o.ablation_max_abs
    FROM edge_occurrences o
    SEMI JOIN steps s ON s.run_id = o.run_id AND s.up_layer = o.up_layer AND s.up_feature = o.up_feature
                     AND s.down_feature = o.down_feature AND s.sign = o.sign
    WHERE o.down_layer = o.up_layer + 1
),
strong AS (
    SELECT o.*
    FROM occ o
    ASOF LEFT JOIN fg_edge_nulls(run, max_p, experiment) nn
      ON nn.run_id = o.run_id AND nn.layer = o.up_layer AND nn.feature = o.up_feature AND abs(o.weight) <= nn.value
    WHERE fg_strong(o.weight, o.ablation_max_abs, (1 + nn.n_ge) / (1 + nn.n_samples), min_weight, min_rel_weight, max_p)
),
hits AS (
    SELECT s.cid, o.run_id, o.prompt_id
    FROM strong o
    JOIN steps s ON s.run_id = o.run_id AND s.up_layer = o.up_layer AND s.up_feature = o.up_feature
                AND s.down_feature = o.down_feature AND s.sign = o.sign
    GROUP BY s.cid, o.run_id, o.prompt_id
    HAVING count(*) = n_edges
),
tag_sizes AS (
    SELECT p.run_id, p.tag AS tag_name, count(*) AS n_prompts
    FROM prompts p
    WHERE p.tag IS NOT NULL AND (run IS NULL OR p.run_id = run)
    GROUP BY ALL
),
per_tag AS (
    SELECT f.cid, t.tag_name, t.n_prompts, count(h.prompt_id) AS support,
           count(h.prompt_id) / t.n_prompts AS share
    FROM found f
    JOIN tag_sizes t ON t.run_id = f.run_id
    LEFT JOIN (SELECT h.*, p.tag AS tag_name FROM hits h
               JOIN prompts p ON p.run_id = h.run_id AND p.prompt_id = h.prompt_id) h
      ON h.cid = f.cid AND h.tag_name = t.tag_name
    GROUP BY f.cid, t.tag_name, t.n_prompts
),
scored AS (
    SELECT cid,
           coalesce(max(support) FILTER (WHERE tag_name = tag), 0) AS support,
           max(n_prompts) FILTER (WHERE tag_name = tag) AS tag_prompts,
           coalesce(max(share) FILTER (WHERE tag_name = tag), 0) AS share,
           first(tag_name ORDER BY share DESC, tag_name) FILTER (WHERE tag_name <> tag AND support > 0) AS other_tag,
           coalesce(max(share) FILTER (WHERE tag_name <> tag), 0) AS other_share,
           list({'tag': tag_name, 'support': support, 'n_prompts': n_prompts} ORDER BY tag_name) AS tag_supports
    FROM per_tag
    GROUP BY cid
)
SELECT f.run_id, f.path, f.nodes, f.signs, s.support, f.support_any, s.tag_prompts, s.share,
       s.other_tag, o.support AS other_support, s.other_share, s.share - s.other_share AS specificity,
       f.mean_weights, f.start_layer, f.features, s.tag_supports
FROM found f
JOIN scored s ON s.cid = f.cid
LEFT JOIN per_tag o ON o.cid = f.cid AND o.tag_name = s.other_tag
QUALIFY top IS NULL
     OR row_number() OVER (PARTITION BY f.run_id ORDER BY s.share - s.other_share DESC, s.support DESC, f.path, f.signs) <= top
ORDER BY specificity DESC, s.support DESC, f.run_id, f.path, f.signs;
