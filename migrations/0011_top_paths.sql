-- featuregraph schema, step 11: top-k recurring paths at any support, with no cap on candidates.
--
-- A chain is u0 -> u1 -> ... -> uK where each step is a stored signed edge and consecutive steps
-- meet at the same (layer, feature) node; a step may skip layers (down_layer > up_layer + 1).
-- Its support is the number of prompts in which every step occurs (and passes the strength
-- filters): the size of the intersection of its edges' prompt sets, so it can only shrink as the
-- chain grows, and it is at most the support of its rarest edge. recurring_paths(top := N)
-- uses that to avoid enumerating every chain (see the macro).
-- Reads only edge_summary (run_id, layers, features, sign, n), edge_occurrences (the same key,
-- prompt_id, weight, ablation_max_abs), prompts (tag) and the noise tables: no physical layout
-- (sort order, n_sorted) is relied on, and no derived structure is stored.
-- docs/sql.md documents the parameters, ranking and ties.

-- The signed edges seen in at least `threshold` prompts (edge_summary.n), in a run and a layer
-- range, with n. A NULL threshold gives none, by a join on an empty row, so that a search step
-- that is not needed reads nothing (an empty join side ends the scan of the other). (The last two
-- conditions are always true, but the planner cannot tell (their bounds are computed from the
-- threshold, which it does not know): each halves its estimate of the rows,
-- so that joins with edge_occurrences build their hash table on these edges rather than on the
-- occurrences, which on sparse data are fewer than the summary rows.)
CREATE MACRO fg_path_edges(threshold, run, min_layer, max_layer) AS TABLE
SELECT e.run_id, e.up_layer, e.up_feature, e.down_layer, e.down_feature, e.sign, e.n
FROM edge_summary e
JOIN (SELECT CAST(threshold AS INTEGER) AS at_least,
             CAST(threshold AS BIGINT) - CAST(threshold AS BIGINT) + 2147483647 AS at_most,
             CAST(threshold AS BIGINT) - CAST(threshold AS BIGINT) - 1 AS below_any
      WHERE threshold IS NOT NULL) g
  ON e.n >= g.at_least AND e.n <= g.at_most AND e.up_feature > g.below_any
WHERE (run IS NULL OR e.run_id = run) AND (min_layer IS NULL OR e.up_layer >= min_layer)
  AND (max_layer IS NULL OR e.down_layer <= max_layer);

-- The number of chains of n_edges edges (sign pattern as given) whose every edge has n >=
-- threshold: a bound on how many chains can reach that support, counted along the layers
-- without looking at prompts (ways: the chains ending at a node).
CREATE MACRO fg_chain_bound(threshold, n_edges, run, min_layer, max_layer, sign_pattern) AS TABLE
WITH
e AS MATERIALIZED (SELECT * FROM fg_path_edges(threshold, run, min_layer, max_layer)),
p1 AS (
    SELECT run_id, down_layer AS layer, down_feature AS feature, CAST(count(*) AS HUGEINT) AS ways
    FROM e WHERE coalesce(sign_pattern[1], 0) IN (0, sign) GROUP BY ALL
),
p2 AS (
    SELECT e.run_id, e.down_layer AS layer, e.down_feature AS feature, sum(p.ways) AS ways
    FROM p1 p JOIN e ON e.run_id = p.run_id AND e.up_layer = p.layer AND e.up_feature = p.feature
    WHERE n_edges >= 2 AND coalesce(sign_pattern[2], 0) IN (0, e.sign) GROUP BY ALL
),
p3 AS (
    SELECT e.run_id, e.down_layer AS layer, e.down_feature AS feature, sum(p.ways) AS ways
    FROM p2 p JOIN e ON e.run_id = p.run_id AND e.up_layer = p.layer AND e.up_feature = p.feature
    WHERE n_edges >= 3 AND coalesce(sign_pattern[3], 0) IN (0, e.sign) GROUP BY ALL
),
p4 AS (
    SELECT e.run_id, e.down_layer AS layer, e.down_feature AS feature, sum(p.ways) AS ways
    FROM p3 p JOIN e ON e.run_id = p.run_id AND e.up_layer = p.layer AND e.up_feature = p.feature
    WHERE n_edges >= 4 AND coalesce(sign_pattern[4], 0) IN (0, e.sign) GROUP BY ALL
),
p5 AS (
    SELECT e.run_id, e.down_layer AS layer, e.down_feature AS feature, sum(p.ways) AS ways
    FROM p4 p JOIN e ON e.run_id = p.run_id AND e.up_layer = p.layer AND e.up_feature = p.feature
    WHERE n_edges >= 5 AND coalesce(sign_pattern[5], 0) IN (0, e.sign) GROUP BY ALL
),
p6 AS (
    SELECT e.run_id, e.down_layer AS layer, e.down_feature AS feature, sum(p.ways) AS ways
    FROM p5 p JOIN e ON e.run_id = p.run_id AND e.up_layer = p.layer AND e.up_feature = p.feature
    WHERE n_edges >= 6 AND coalesce(sign_pattern[6], 0) IN (0, e.sign) GROUP BY ALL
)
SELECT coalesce(sum(ways), 0) AS chains
FROM (SELECT ways FROM p2 WHERE n_edges = 2 UNION ALL SELECT ways FROM p3 WHERE n_edges = 3
      UNION ALL SELECT ways FROM p4 WHERE n_edges = 4 UNION ALL SELECT ways FROM p5 WHERE n_edges = 5
      UNION ALL SELECT ways FROM p6 WHERE n_edges = 6);

-- The occurrences of the signed edges seen in at least `threshold` prompts (edge_summary.n),
-- restricted to a run, a layer range and a prompt tag, with `strong`: the occurrence passes the
-- strength filters (fg_strong). p-values only when max_p asks for them (the ASOF join sorts).
CREATE MACRO fg_path_occurrences(threshold, run, min_layer, max_layer, prompt_tag, min_weight,
                                 min_rel_weight, max_p, experiment) AS TABLE
WITH
-- (an inner join, not a semi join: keys are unique, and the planner then builds on the keys)
keys AS (SELECT * FROM fg_path_edges(threshold, run, min_layer, max_layer)),
rows AS (
    SELECT o.run_id, o.prompt_id, o.up_layer, o.up_feature, o.down_layer, o.down_feature, o.sign,
           o.weight, o.ablation_max_abs
    FROM edge_occurrences o
    JOIN keys k ON k.run_id = o.run_id AND k.up_layer = o.up_layer AND k.up_feature = o.up_feature
               AND k.down_layer = o.down_layer AND k.down_feature = o.down_feature AND k.sign = o.sign
    WHERE (prompt_tag IS NULL OR (o.run_id, o.prompt_id) IN (
            SELECT (p.run_id, p.prompt_id) FROM prompts p WHERE p.tag = prompt_tag))
),
scored AS (
    SELECT r.*, CAST(NULL AS DOUBLE) AS p_value FROM rows r WHERE max_p IS NULL
    UNION ALL
    SELECT r.*, (1 + nn.n_ge) / (1 + nn.n_samples) AS p_value
    FROM rows r
    ASOF LEFT JOIN fg_edge_nulls(run, max_p, experiment) nn
      ON nn.run_id = r.run_id AND nn.layer = r.up_layer AND nn.feature = r.up_feature AND abs(r.weight) <= nn.value
    WHERE max_p IS NOT NULL
)
SELECT run_id, prompt_id, up_layer, up_feature, down_layer, down_feature, sign, weight,
       fg_strong(weight, ablation_max_abs, p_value, min_weight, min_rel_weight, max_p) AS strong
FROM scored;

-- The exact level-wise search: every chain of n_edges candidate edges (edge_summary.n >=
-- threshold) whose support reaches `threshold`, with
-- support_any, mean_weights (over the supporting prompts) and strength (the smallest |mean
-- weight| along the chain). Chains grow one edge at a time and are extended only while they and
-- their tails reach the threshold. Chains are keyed by their edges' ids (e1..e6), not packed
-- into one number, so the number of candidate edges is not capped. (Candidates are not first
-- pruned to those on a chain of n_edges candidates, as in 0010: a recursive CTE there leaves the
-- planner without a size estimate, and it then builds its hash tables on the occurrences.)
CREATE MACRO fg_chains_at(threshold, n_edges, run, min_layer, max_layer, sign_pattern, min_weight,
                          prompt_tag, min_rel_weight, max_p, experiment) AS TABLE
WITH
frequent AS MATERIALIZED (
    SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign
    FROM fg_path_edges(threshold, run, min_layer, max_layer)
),
useful AS MATERIALIZED (SELECT f.*, row_number() OVER () AS eid FROM frequent f),
nodes AS MATERIALIZED (
    SELECT run_id, layer, feature, row_number() OVER () AS node
    FROM (SELECT run_id, up_layer AS layer, up_feature AS feature FROM useful
          UNION SELECT run_id, down_layer, down_feature FROM useful)
),
-- rp: run and prompt in one key; at / dest: the edge's upstream / downstream node.
occ AS MATERIALIZED (
    SELECT (CAST(o.run_id AS BIGINT) << 32) + o.prompt_id AS rp, nu.node AS at, nd.node AS dest,
           u.eid, o.sign, o.weight, o.strong
    FROM fg_path_occurrences(threshold, run, min_layer, max_layer, prompt_tag, min_weight, min_rel_weight,
                             max_p, experiment) o
    JOIN useful u ON u.run_id = o.run_id AND u.up_layer = o.up_layer AND u.up_feature = o.up_feature
                 AND u.down_layer = o.down_layer AND u.down_feature = o.down_feature AND u.sign = o.sign
    JOIN nodes nu ON nu.run_id = u.run_id AND nu.layer = u.up_layer AND nu.feature = u.up_feature
    JOIN nodes nd ON nd.run_id = u.run_id AND nd.layer = u.down_layer AND nd.feature = u.down_feature
),
-- lK: the chains of K edges in each prompt (eI: the I-th edge; dest: where it ends; wI: the I-th
-- weight); fK: the K-edge chains strong in at least `threshold` prompts.
l1 AS (
    SELECT rp, eid AS e1, dest, strong, weight AS w1 FROM occ WHERE coalesce(sign_pattern[1], 0) IN (0, sign)
),
l2 AS MATERIALIZED (
    SELECT c.rp, c.e1, o.eid AS e2, o.dest, c.strong AND o.strong AS strong, c.w1, o.weight AS w2
    FROM l1 c JOIN occ o ON o.rp = c.rp AND o.at = c.dest
    WHERE n_edges >= 2 AND coalesce(sign_pattern[2], 0) IN (0, o.sign)
),
f2 AS (SELECT e1, e2 FROM l2 GROUP BY ALL HAVING count(*) FILTER (WHERE strong) >= threshold),
l3 AS MATERIALIZED (
    SELECT c.rp, c.e1, c.e2, o.eid AS e3, o.dest, c.strong AND o.strong AS strong, c.w1, c.w2, o.weight AS w3
    FROM l2 c
    SEMI JOIN f2 f ON f.e1 = c.e1 AND f.e2 = c.e2
    JOIN occ o ON o.rp = c.rp AND o.at = c.dest
    SEMI JOIN f2 t ON t.e1 = c.e2 AND t.e2 = o.eid
    WHERE n_edges >= 3 AND coalesce(sign_pattern[3], 0) IN (0, o.sign)
),
f3 AS (SELECT e1, e2, e3 FROM l3 GROUP BY ALL HAVING count(*) FILTER (WHERE strong) >= threshold),
l4 AS MATERIALIZED (
    SELECT c.rp, c.e1, c.e2, c.e3, o.eid AS e4, o.dest, c.strong AND o.strong AS strong, c.w1, c.w2, c.w3,
           o.weight AS w4
    FROM l3 c
    SEMI JOIN f3 f ON f.e1 = c.e1 AND f.e2 = c.e2 AND f.e3 = c.e3
    JOIN occ o ON o.rp = c.rp AND o.at = c.dest
    SEMI JOIN f3 t ON t.e1 = c.e2 AND t.e2 = c.e3 AND t.e3 = o.eid
    WHERE n_edges >= 4 AND coalesce(sign_pattern[4], 0) IN (0, o.sign)
),
f4 AS (SELECT e1, e2, e3, e4 FROM l4 GROUP BY ALL HAVING count(*) FILTER (WHERE strong) >= threshold),
l5 AS MATERIALIZED (
    SELECT c.rp, c.e1, c.e2, c.e3, c.e4, o.eid AS e5, o.dest, c.strong AND o.strong AS strong, c.w1, c.w2,
           c.w3, c.w4, o.weight AS w5
    FROM l4 c
    SEMI JOIN f4 f ON f.e1 = c.e1 AND f.e2 = c.e2 AND f.e3 = c.e3 AND f.e4 = c.e4
    JOIN occ o ON o.rp = c.rp AND o.at = c.dest
    SEMI JOIN f4 t ON t.e1 = c.e2 AND t.e2 = c.e3 AND t.e3 = c.e4 AND t.e4 = o.eid
    WHERE n_edges >= 5 AND coalesce(sign_pattern[5], 0) IN (0, o.sign)
),
f5 AS (SELECT e1, e2, e3, e4, e5 FROM l5 GROUP BY ALL HAVING count(*) FILTER (WHERE strong) >= threshold),
l6 AS MATERIALIZED (
    SELECT c.rp, c.e1, c.e2, c.e3, c.e4, c.e5, o.eid AS e6, o.dest, c.strong AND o.strong AS strong, c.w1,
           c.w2, c.w3, c.w4, c.w5, o.weight AS w6
    FROM l5 c
    SEMI JOIN f5 f ON f.e1 = c.e1 AND f.e2 = c.e2 AND f.e3 = c.e3 AND f.e4 = c.e4 AND f.e5 = c.e5
    JOIN occ o ON o.rp = c.rp AND o.at = c.dest
    SEMI JOIN f5 t ON t.e1 = c.e2 AND t.e2 = c.e3 AND t.e3 = c.e4 AND t.e4 = c.e5 AND t.e5 = o.eid
    WHERE n_edges >= 6 AND coalesce(sign_pattern[6], 0) IN (0, o.sign)
),
-- (A chain's layers strictly increase, so it occurs at most once per prompt: count(*) counts prompts.)
chains AS (
    SELECT e1, e2, NULL::BIGINT AS e3, NULL::BIGINT AS e4, NULL::BIGINT AS e5, NULL::BIGINT AS e6, strong,
           w1, w2, NULL::REAL AS w3, NULL::REAL AS w4, NULL::REAL AS w5, NULL::REAL AS w6
    FROM l2 WHERE n_edges = 2
    UNION ALL SELECT e1, e2, e3, NULL, NULL, NULL, strong, w1, w2, w3, NULL, NULL, NULL FROM l3 WHERE n_edges = 3
    UNION ALL SELECT e1, e2, e3, e4, NULL, NULL, strong, w1, w2, w3, w4, NULL, NULL FROM l4 WHERE n_edges = 4
    UNION ALL SELECT e1, e2, e3, e4, e5, NULL, strong, w1, w2, w3, w4, w5, NULL FROM l5 WHERE n_edges = 5
    UNION ALL SELECT e1, e2, e3, e4, e5, e6, strong, w1, w2, w3, w4, w5, w6 FROM l6 WHERE n_edges = 6
),
counted AS MATERIALIZED (
    SELECT [e1, e2, e3, e4, e5, e6][1:n_edges] AS edges,
           count(*) FILTER (WHERE strong) AS support, count(*) AS support_any,
           [avg(w1) FILTER (WHERE strong), avg(w2) FILTER (WHERE strong), avg(w3) FILTER (WHERE strong),
            avg(w4) FILTER (WHERE strong), avg(w5) FILTER (WHERE strong),
            avg(w6) FILTER (WHERE strong)][1:n_edges] AS mean_weights
    FROM chains
    GROUP BY e1, e2, e3, e4, e5, e6
    HAVING count(*) FILTER (WHERE strong) >= threshold
),
steps AS (
    SELECT edges, i, edges[i] AS eid FROM (SELECT edges, unnest(generate_series(1, n_edges)) AS i FROM counted)
)
-- layers / features: the chain's nodes in order; strength: the smallest |mean weight| along it.
SELECT first(u.run_id) AS run_id,
       list_append(list(u.up_layer ORDER BY s.i), last(u.down_layer ORDER BY s.i)) AS layers,
       list_append(list(u.up_feature ORDER BY s.i), last(u.down_feature ORDER BY s.i)) AS features,
       list(u.sign ORDER BY s.i) AS signs,
       c.support, c.support_any, c.mean_weights,
       list_min(list_transform(c.mean_weights, lambda w: abs(w))) AS strength
FROM counted c
JOIN steps s ON s.edges = c.edges
JOIN useful u ON u.eid = s.eid
GROUP BY c.edges, c.support, c.support_any, c.mean_weights;

-- Recurring paths across prompts ---------------------------------------------------------------
-- As in 0010_path_strength.sql (same parameters, filters and columns), plus:
--   top      NULL: every chain whose support reaches min_support; N: the first N in rank order,
--            found without enumerating the rest (below).
--   rank_by  'support' (support, most first) or 'strength' (the smallest |mean weight| along the
--            chain, largest first; then support). Ranking by strength has no support bound to
--            prune with: it searches every chain reaching min_support, then keeps the first N.
-- Ties are broken the same way whatever `top` is: run_id, then the chain's nodes compared in
-- order as (layer, feature) pairs, then the signs (-1 before +1); `top` cuts the list there, so
-- of the chains tied at the N-th support the first ones in that order are kept, always the same.
-- Columns also give `layers` (each node's layer: steps may skip layers) and `strength`.
--
-- top := N by support: the exact search runs at a threshold lowered step by step, from the
-- largest support any candidate edge has (`upper`, a bound on every chain's support) by a
-- factor of at least 2 per step, to min_support in at most 6 steps; it stops at the first
-- threshold where N chains reach it. Those are all the chains with that support or more, so the
-- first N of them are the answer, and the threshold is more than the N-th support / factor:
-- the search never goes much below the support the answer needs. (Each step's CTE is gated on
-- the previous ones: a NULL threshold leaves it empty.)
CREATE OR REPLACE MACRO recurring_paths(n_edges := 3, min_support := 2, run := NULL, min_layer := NULL,
                                        max_layer := NULL, sign_pattern := NULL, min_weight := 0,
                                        prompt_tag := NULL, min_rel_weight := 0, max_p := NULL,
                                        experiment := NULL, top := NULL, rank_by := 'support') AS TABLE
WITH
checked AS MATERIALIZED (
    SELECT CASE WHEN NOT n_edges BETWEEN 2 AND 6 THEN error('n_edges must be between 2 and 6, got ' || n_edges)
                WHEN rank_by NOT IN ('support', 'strength')
                    THEN error('rank_by must be ''support'' or ''strength'', got ' || coalesce(rank_by, 'NULL'))
                WHEN top < 1 THEN error('top must be >= 1, got ' || top)
                ELSE greatest(min_support, 2) END AS floor_support,
           top IS NOT NULL AND rank_by = 'support' AS descend,
           (SELECT max(n) FROM edge_summary
            WHERE top IS NOT NULL AND (run IS NULL OR run_id = run)
              AND (min_layer IS NULL OR up_layer >= min_layer) AND (max_layer IS NULL OR down_layer <= max_layer))
               AS max_n
),
plan AS MATERIALIZED (
    SELECT floor_support, descend, greatest(coalesce(max_n, 0), floor_support) AS upper,
           greatest(2.0, pow(greatest(coalesce(max_n, 0), floor_support) / floor_support, 1.0 / 6)) AS factor
    FROM checked
),
t1 AS MATERIALIZED (
    SELECT CASE WHEN descend THEN greatest(floor_support, floor(upper / factor)) END AS threshold FROM plan
),
g1 AS MATERIALIZED (
    SELECT CASE WHEN t.threshold <= p.floor_support OR b.chains >= top THEN t.threshold END AS threshold
    FROM plan p, t1 t, fg_chain_bound((SELECT threshold FROM t1), n_edges, run, min_layer, max_layer, sign_pattern) b
),
found1 AS MATERIALIZED (
    SELECT 1 AS level, *
    FROM fg_chains_at((SELECT threshold FROM g1), n_edges, run, min_layer, max_layer, sign_pattern,
                      min_weight, prompt_tag, min_rel_weight, max_p, experiment)
),
d1 AS MATERIALIZED (
    SELECT false OR ((SELECT threshold FROM g1) IS NOT NULL AND (SELECT count(*) FROM found1) >= top) AS done
),
t2 AS MATERIALIZED (
    SELECT CASE WHEN descend AND NOT (SELECT done FROM d1) AND (SELECT threshold FROM t1) > floor_support
                     THEN greatest(floor_support, floor(upper / pow(factor, 2))) END AS threshold FROM plan
),
g2 AS MATERIALIZED (
    SELECT CASE WHEN t.threshold <= p.floor_support OR b.chains >= top THEN t.threshold END AS threshold
    FROM plan p, t2 t, fg_chain_bound((SELECT threshold FROM t2), n_edges, run, min_layer, max_layer, sign_pattern) b
),
found2 AS MATERIALIZED (
    SELECT 2 AS level, *
    FROM fg_chains_at((SELECT threshold FROM g2), n_edges, run, min_layer, max_layer, sign_pattern,
                      min_weight, prompt_tag, min_rel_weight, max_p, experiment)
),
d2 AS MATERIALIZED (
    SELECT (SELECT done FROM d1) OR ((SELECT threshold FROM g2) IS NOT NULL AND (SELECT count(*) FROM found2) >= top) AS done
),
t3 AS MATERIALIZED (
    SELECT CASE WHEN descend AND NOT (SELECT done FROM d2) AND (SELECT threshold FROM t2) > floor_support
                     THEN greatest(floor_support, floor(upper / pow(factor, 3))) END AS threshold FROM plan
),
g3 AS MATERIALIZED (
    SELECT CASE WHEN t.threshold <= p.floor_support OR b.chains >= top THEN t.threshold END AS threshold
    FROM plan p, t3 t, fg_chain_bound((SELECT threshold FROM t3), n_edges, run, min_layer, max_layer, sign_pattern) b
),
found3 AS MATERIALIZED (
    SELECT 3 AS level, *
    FROM fg_chains_at((SELECT threshold FROM g3), n_edges, run, min_layer, max_layer, sign_pattern,
                      min_weight, prompt_tag, min_rel_weight, max_p, experiment)
),
d3 AS MATERIALIZED (
    SELECT (SELECT done FROM d2) OR ((SELECT threshold FROM g3) IS NOT NULL AND (SELECT count(*) FROM found3) >= top) AS done
),
t4 AS MATERIALIZED (
    SELECT CASE WHEN descend AND NOT (SELECT done FROM d3) AND (SELECT threshold FROM t3) > floor_support
                     THEN greatest(floor_support, floor(upper / pow(factor, 4))) END AS threshold FROM plan
),
g4 AS MATERIALIZED (
    SELECT CASE WHEN t.threshold <= p.floor_support OR b.chains >= top THEN t.threshold END AS threshold
    FROM plan p, t4 t, fg_chain_bound((SELECT threshold FROM t4), n_edges, run, min_layer, max_layer, sign_pattern) b
),
found4 AS MATERIALIZED (
    SELECT 4 AS level, *
    FROM fg_chains_at((SELECT threshold FROM g4), n_edges, run, min_layer, max_layer, sign_pattern,
                      min_weight, prompt_tag, min_rel_weight, max_p, experiment)
),
d4 AS MATERIALIZED (
    SELECT (SELECT done FROM d3) OR ((SELECT threshold FROM g4) IS NOT NULL AND (SELECT count(*) FROM found4) >= top) AS done
),
t5 AS MATERIALIZED (
    SELECT CASE WHEN descend AND NOT (SELECT done FROM d4) AND (SELECT threshold FROM t4) > floor_support
                     THEN greatest(floor_support, floor(upper / pow(factor, 5))) END AS threshold FROM plan
),
g5 AS MATERIALIZED (
    SELECT CASE WHEN t.threshold <= p.floor_support OR b.chains >= top THEN t.threshold END AS threshold
    FROM plan p, t5 t, fg_chain_bound((SELECT threshold FROM t5), n_edges, run, min_layer, max_layer, sign_pattern) b
),
found5 AS MATERIALIZED (
    SELECT 5 AS level, *
    FROM fg_chains_at((SELECT threshold FROM g5), n_edges, run, min_layer, max_layer, sign_pattern,
                      min_weight, prompt_tag, min_rel_weight, max_p, experiment)
),
d5 AS MATERIALIZED (
    SELECT (SELECT done FROM d4) OR ((SELECT threshold FROM g5) IS NOT NULL AND (SELECT count(*) FROM found5) >= top) AS done
),
t6 AS MATERIALIZED (
    SELECT CASE WHEN NOT descend OR (NOT (SELECT done FROM d5) AND (SELECT threshold FROM t5) > floor_support)
                     THEN floor_support END AS threshold FROM plan
),
g6 AS MATERIALIZED (
    SELECT CASE WHEN t.threshold <= p.floor_support OR b.chains >= top THEN t.threshold END AS threshold
    FROM plan p, t6 t, fg_chain_bound((SELECT threshold FROM t6), n_edges, run, min_layer, max_layer, sign_pattern) b
),
found6 AS MATERIALIZED (
    SELECT 6 AS level, *
    FROM fg_chains_at((SELECT threshold FROM g6), n_edges, run, min_layer, max_layer, sign_pattern,
                      min_weight, prompt_tag, min_rel_weight, max_p, experiment)
),
d6 AS MATERIALIZED (
    SELECT (SELECT done FROM d5) OR ((SELECT threshold FROM g6) IS NOT NULL AND (SELECT count(*) FROM found6) >= top) AS done
),
found AS (
    SELECT *, list_transform(list_zip(layers, features), lambda p: {'layer': p[1], 'feature': p[2]}) AS node_key
    FROM (SELECT * FROM found1
    UNION ALL SELECT * FROM found2
    UNION ALL SELECT * FROM found3
    UNION ALL SELECT * FROM found4
    UNION ALL SELECT * FROM found5
    UNION ALL SELECT * FROM found6
)
    QUALIFY level = max(level) OVER ()
),
ranked AS (
    SELECT *, row_number() OVER (
        ORDER BY CASE WHEN rank_by = 'strength' THEN strength END DESC NULLS LAST, support DESC, run_id, node_key, signs
    ) AS rank
    FROM found
)
SELECT run_id,
       array_to_string(list_transform(features, lambda f, i: fg_node(layers[i], f)), ' -> ') AS path,
       list_transform(features, lambda f, i: fg_node(layers[i], f)) AS nodes,
       signs, support, support_any, mean_weights, layers[1] AS start_layer, features, layers, strength
FROM ranked
WHERE top IS NULL OR rank <= top
ORDER BY rank;

-- Paths specific to one prompt tag --------------------------------------------------------------
-- As in 0010_path_strength.sql (same parameters and columns, plus `layers`), for the chains of
-- recurring_paths(prompt_tag := tag, min_support, top := chains_in_tag): each counted in every
-- tag of its run with the same filters.
CREATE MACRO fg_tag_scored(tag, n_edges, min_support, chains_in_tag, run, min_weight, min_rel_weight, max_p,
                           experiment) AS TABLE
WITH
chosen AS MATERIALIZED (
    SELECT row_number() OVER () AS cid, *
    FROM recurring_paths(n_edges := n_edges, min_support := min_support, run := run, min_weight := min_weight,
                         prompt_tag := tag, min_rel_weight := min_rel_weight, max_p := max_p,
                         experiment := experiment, top := chains_in_tag)
),
steps AS MATERIALIZED (
    SELECT cid, run_id, layers[i] AS up_layer, features[i] AS up_feature, layers[i + 1] AS down_layer,
           features[i + 1] AS down_feature, signs[i] AS sign
    FROM (SELECT cid, run_id, layers, features, signs, unnest(generate_series(1, n_edges)) AS i FROM chosen)
),
-- (each step occurs in at least as many prompts as the least supported chain, >= 2, so all its
-- occurrences are in edge_occurrences; reading only such edges skips most of the table)
hits AS (
    SELECT s.cid, o.run_id, o.prompt_id
    FROM fg_path_occurrences((SELECT min(support) FROM chosen), run, NULL, NULL, NULL, min_weight, min_rel_weight,
                             max_p, experiment) o
    JOIN steps s ON s.run_id = o.run_id AND s.up_layer = o.up_layer AND s.up_feature = o.up_feature
                AND s.down_layer = o.down_layer AND s.down_feature = o.down_feature AND s.sign = o.sign
    WHERE o.strong
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
    FROM chosen f
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
       f.mean_weights, f.start_layer, f.features, f.layers, s.tag_supports
FROM chosen f
JOIN scored s ON s.cid = f.cid
LEFT JOIN per_tag o ON o.cid = f.cid AND o.tag_name = s.other_tag;

-- The `top` most specific chains per run (NULL: all), exactly, without scoring every chain: a
-- chain's specificity is at most its share of the tag (support / the tag's prompts). A pilot
-- scores the 4 x top chains most supported in the tag; where every run with the tag has a top-th
-- best specificity q > 0 among them, only chains with support >= q x (the run's tag prompts) can
-- rank, so the search runs at that support (the smallest over runs) instead of min_support.
-- Ties: specificity, then support (most first), then the path and signs.
CREATE OR REPLACE MACRO tag_specific_paths(tag, n_edges := 2, min_support := 2, run := NULL, min_weight := 0,
                                           min_rel_weight := 0, max_p := NULL, experiment := NULL,
                                           top := 20) AS TABLE
WITH
__tag_pilot AS (
    SELECT run_id, max(tag_prompts) AS tag_prompts,
           list(specificity ORDER BY specificity DESC)[top] AS kth
    FROM fg_tag_scored(tag, n_edges, min_support, 4 * coalesce(top, 0), run, min_weight, min_rel_weight, max_p,
                       experiment)
    WHERE top IS NOT NULL
    GROUP BY run_id
),
__tag_threshold AS MATERIALIZED (
    SELECT CASE WHEN top IS NOT NULL
                 AND (SELECT count(*) FROM __tag_pilot WHERE kth > 0)
                     = (SELECT count(DISTINCT run_id) FROM (SELECT run_id, tag AS tag_name FROM prompts)
                        WHERE tag_name = tag AND (run IS NULL OR run_id = run))
                THEN greatest(min_support, (SELECT min(floor(kth * tag_prompts + 1e-9)) FROM __tag_pilot))
                ELSE min_support END AS support
)
SELECT *
FROM fg_tag_scored(tag, n_edges, (SELECT support FROM __tag_threshold), NULL, run, min_weight, min_rel_weight,
                   max_p, experiment)
QUALIFY top IS NULL
     OR row_number() OVER (PARTITION BY run_id ORDER BY specificity DESC, support DESC, path, signs) <= top
ORDER BY specificity DESC, support DESC, run_id, path, signs;
