-- featuregraph schema, step 16: recurring_paths(top := N) reads the occurrences once per call.
--
-- Until now each step of the threshold ladder (0011) scanned edge_summary twice and
-- edge_occurrences once, and each bound (fg_chain_bound) scanned edge_summary again: on sparse
-- data (20 k prompts, 10.5 M edges) the scans, not the chains, were most of the time, and the
-- search was slower than listing every path. Now a call reads the candidate edges (n >=
-- min_support) and their occurrences once, into two CTEs, and every bound and every step of
-- the ladder filters those by its threshold (n >= threshold). Same parameters, columns, ladder,
-- ranking and ties as 0011: only where the rows come from changes.
--
-- The building blocks take the NAME of a relation (a CTE of the calling query or a table) and
-- read it with query_table(), so one body serves both the per-call CTEs of recurring_paths and
-- the stand-alone macros of 0011 (fg_chain_bound, fg_path_occurrences, fg_chains_at), which are
-- redefined here on top of them with their signatures and results unchanged.

-- The signed edges seen in at least `threshold` prompts (fg_path_edges), numbered (eid), with
-- their ends as node numbers (up_node, dest: downstream) and n.
CREATE MACRO fg_path_candidates(threshold, run, min_layer, max_layer) AS TABLE
WITH
useful AS MATERIALIZED (
    SELECT f.*, row_number() OVER () AS eid FROM fg_path_edges(threshold, run, min_layer, max_layer) f
),
nodes AS MATERIALIZED (
    SELECT run_id, layer, feature, row_number() OVER () AS node
    FROM (SELECT run_id, up_layer AS layer, up_feature AS feature FROM useful
          UNION SELECT run_id, down_layer, down_feature FROM useful)
)
SELECT u.run_id, u.up_layer, u.up_feature, u.down_layer, u.down_feature, u.sign, u.n, u.eid,
       nu.node AS up_node, nd.node AS dest
FROM useful u
JOIN nodes nu ON nu.run_id = u.run_id AND nu.layer = u.up_layer AND nu.feature = u.up_feature
JOIN nodes nd ON nd.run_id = u.run_id AND nd.layer = u.down_layer AND nd.feature = u.down_feature;

-- The occurrences of the edges listed in the relation named `keys` (columns of edge_summary's
-- key; others are passed through), restricted to a prompt tag, with `strong`: the occurrence
-- passes the strength filters (fg_strong). p-values only when max_p asks for them (the ASOF
-- join sorts). (An inner join, not a semi join: keys are unique, and the planner then builds on
-- the keys.)
CREATE MACRO fg_occurrences_of(keys, run, prompt_tag, min_weight, min_rel_weight, max_p, experiment) AS TABLE
WITH
rows AS (
    SELECT k.*, o.prompt_id, o.weight, o.ablation_max_abs
    FROM edge_occurrences o
    JOIN query_table(keys) k
      ON k.run_id = o.run_id AND k.up_layer = o.up_layer AND k.up_feature = o.up_feature
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
SELECT * EXCLUDE (ablation_max_abs, p_value),
       fg_strong(weight, ablation_max_abs, p_value, min_weight, min_rel_weight, max_p) AS strong
FROM scored;

-- As in 0011 (same parameters and columns), on fg_occurrences_of.
CREATE OR REPLACE MACRO fg_path_occurrences(threshold, run, min_layer, max_layer, prompt_tag, min_weight,
                                            min_rel_weight, max_p, experiment) AS TABLE
WITH __fg_occ_keys AS (
    SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign
    FROM fg_path_edges(threshold, run, min_layer, max_layer)
)
SELECT run_id, prompt_id, up_layer, up_feature, down_layer, down_feature, sign, weight, strong
FROM fg_occurrences_of('__fg_occ_keys', run, prompt_tag, min_weight, min_rel_weight, max_p, experiment);

-- The number of chains of n_edges edges (sign pattern as given) whose every edge, among those of
-- the relation named `cands` (fg_path_candidates), has n >= threshold: a bound on how many chains
-- can reach that support, counted along the layers without looking at prompts (ways: the chains
-- ending at a node). A NULL threshold counts none.
CREATE MACRO fg_chain_bound_in(cands, threshold, n_edges, sign_pattern) AS TABLE
WITH
e AS MATERIALIZED (SELECT up_node, dest, sign FROM query_table(cands) WHERE n >= threshold),
p1 AS (SELECT dest AS node, CAST(count(*) AS HUGEINT) AS ways
       FROM e WHERE coalesce(sign_pattern[1], 0) IN (0, sign) GROUP BY ALL),
p2 AS (SELECT e.dest AS node, sum(p.ways) AS ways FROM p1 p JOIN e ON e.up_node = p.node
       WHERE n_edges >= 2 AND coalesce(sign_pattern[2], 0) IN (0, e.sign) GROUP BY ALL),
p3 AS (SELECT e.dest AS node, sum(p.ways) AS ways FROM p2 p JOIN e ON e.up_node = p.node
       WHERE n_edges >= 3 AND coalesce(sign_pattern[3], 0) IN (0, e.sign) GROUP BY ALL),
p4 AS (SELECT e.dest AS node, sum(p.ways) AS ways FROM p3 p JOIN e ON e.up_node = p.node
       WHERE n_edges >= 4 AND coalesce(sign_pattern[4], 0) IN (0, e.sign) GROUP BY ALL),
p5 AS (SELECT e.dest AS node, sum(p.ways) AS ways FROM p4 p JOIN e ON e.up_node = p.node
       WHERE n_edges >= 5 AND coalesce(sign_pattern[5], 0) IN (0, e.sign) GROUP BY ALL),
p6 AS (SELECT e.dest AS node, sum(p.ways) AS ways FROM p5 p JOIN e ON e.up_node = p.node
       WHERE n_edges >= 6 AND coalesce(sign_pattern[6], 0) IN (0, e.sign) GROUP BY ALL)
SELECT coalesce(sum(ways), 0) AS chains
FROM (SELECT ways FROM p2 WHERE n_edges = 2 UNION ALL SELECT ways FROM p3 WHERE n_edges = 3
      UNION ALL SELECT ways FROM p4 WHERE n_edges = 4 UNION ALL SELECT ways FROM p5 WHERE n_edges = 5
      UNION ALL SELECT ways FROM p6 WHERE n_edges = 6);

-- As in 0011 (same parameters and result), on fg_chain_bound_in.
CREATE OR REPLACE MACRO fg_chain_bound(threshold, n_edges, run, min_layer, max_layer, sign_pattern) AS TABLE
WITH __fg_bound_cands AS MATERIALIZED (SELECT * FROM fg_path_candidates(threshold, run, min_layer, max_layer))
SELECT * FROM fg_chain_bound_in('__fg_bound_cands', threshold, n_edges, sign_pattern);

-- The exact level-wise search of 0011 (fg_chains_at: every chain of n_edges candidate edges whose
-- support reaches `threshold`, with support_any, mean_weights and strength), over the relations
-- named `cands` (fg_path_candidates at or below the threshold) and `occs` (fg_occurrences_of
-- those, with rp: run and prompt in one key): only their edges with n >= threshold are used, so
-- one pair of relations serves every threshold at or above the one they were read at.
CREATE MACRO fg_chains_in(cands, occs, threshold, n_edges, sign_pattern) AS TABLE
WITH
occ AS MATERIALIZED (SELECT rp, up_node, dest, eid, sign, weight, strong FROM query_table(occs) WHERE n >= threshold),
-- lK: the chains of K edges in each prompt (eI: the I-th edge; dest: where it ends; wI: the I-th
-- weight); fK: the K-edge chains strong in at least `threshold` prompts.
l1 AS (
    SELECT rp, eid AS e1, dest, strong, weight AS w1 FROM occ WHERE coalesce(sign_pattern[1], 0) IN (0, sign)
),
l2 AS MATERIALIZED (
    SELECT c.rp, c.e1, o.eid AS e2, o.dest, c.strong AND o.strong AS strong, c.w1, o.weight AS w2
    FROM l1 c JOIN occ o ON o.rp = c.rp AND o.up_node = c.dest
    WHERE n_edges >= 2 AND coalesce(sign_pattern[2], 0) IN (0, o.sign)
),
f2 AS (SELECT e1, e2 FROM l2 GROUP BY ALL HAVING count(*) FILTER (WHERE strong) >= threshold),
l3 AS MATERIALIZED (
    SELECT c.rp, c.e1, c.e2, o.eid AS e3, o.dest, c.strong AND o.strong AS strong, c.w1, c.w2, o.weight AS w3
    FROM l2 c
    SEMI JOIN f2 f ON f.e1 = c.e1 AND f.e2 = c.e2
    JOIN occ o ON o.rp = c.rp AND o.up_node = c.dest
    SEMI JOIN f2 t ON t.e1 = c.e2 AND t.e2 = o.eid
    WHERE n_edges >= 3 AND coalesce(sign_pattern[3], 0) IN (0, o.sign)
),
f3 AS (SELECT e1, e2, e3 FROM l3 GROUP BY ALL HAVING count(*) FILTER (WHERE strong) >= threshold),
l4 AS MATERIALIZED (
    SELECT c.rp, c.e1, c.e2, c.e3, o.eid AS e4, o.dest, c.strong AND o.strong AS strong, c.w1, c.w2, c.w3,
           o.weight AS w4
    FROM l3 c
    SEMI JOIN f3 f ON f.e1 = c.e1 AND f.e2 = c.e2 AND f.e3 = c.e3
    JOIN occ o ON o.rp = c.rp AND o.up_node = c.dest
    SEMI JOIN f3 t ON t.e1 = c.e2 AND t.e2 = c.e3 AND t.e3 = o.eid
    WHERE n_edges >= 4 AND coalesce(sign_pattern[4], 0) IN (0, o.sign)
),
f4 AS (SELECT e1, e2, e3, e4 FROM l4 GROUP BY ALL HAVING count(*) FILTER (WHERE strong) >= threshold),
l5 AS MATERIALIZED (
    SELECT c.rp, c.e1, c.e2, c.e3, c.e4, o.eid AS e5, o.dest, c.strong AND o.strong AS strong, c.w1, c.w2,
           c.w3, c.w4, o.weight AS w5
    FROM l4 c
    SEMI JOIN f4 f ON f.e1 = c.e1 AND f.e2 = c.e2 AND f.e3 = c.e3 AND f.e4 = c.e4
    JOIN occ o ON o.rp = c.rp AND o.up_node = c.dest
    SEMI JOIN f4 t ON t.e1 = c.e2 AND t.e2 = c.e3 AND t.e3 = c.e4 AND t.e4 = o.eid
    WHERE n_edges >= 5 AND coalesce(sign_pattern[5], 0) IN (0, o.sign)
),
f5 AS (SELECT e1, e2, e3, e4, e5 FROM l5 GROUP BY ALL HAVING count(*) FILTER (WHERE strong) >= threshold),
l6 AS MATERIALIZED (
    SELECT c.rp, c.e1, c.e2, c.e3, c.e4, c.e5, o.eid AS e6, o.dest, c.strong AND o.strong AS strong, c.w1,
           c.w2, c.w3, c.w4, c.w5, o.weight AS w6
    FROM l5 c
    SEMI JOIN f5 f ON f.e1 = c.e1 AND f.e2 = c.e2 AND f.e3 = c.e3 AND f.e4 = c.e4 AND f.e5 = c.e5
    JOIN occ o ON o.rp = c.rp AND o.up_node = c.dest
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
JOIN query_table(cands) u ON u.eid = s.eid
GROUP BY c.edges, c.support, c.support_any, c.mean_weights;

-- The candidates of fg_path_candidates at `threshold` with their occurrences (fg_occurrences_of),
-- one row per occurrence, in the columns fg_chains_in reads.
CREATE MACRO fg_candidate_occurrences(cands, run, prompt_tag, min_weight, min_rel_weight, max_p,
                                      experiment) AS TABLE
SELECT (CAST(run_id AS BIGINT) << 32) + prompt_id AS rp, up_node, dest, eid, n, sign, weight, strong
FROM fg_occurrences_of(cands, run, prompt_tag, min_weight, min_rel_weight, max_p, experiment);

-- As in 0011 (same parameters and columns), on fg_chains_in.
CREATE OR REPLACE MACRO fg_chains_at(threshold, n_edges, run, min_layer, max_layer, sign_pattern, min_weight,
                                     prompt_tag, min_rel_weight, max_p, experiment) AS TABLE
WITH
__fg_at_cands AS MATERIALIZED (SELECT * FROM fg_path_candidates(threshold, run, min_layer, max_layer)),
__fg_at_occs AS MATERIALIZED (
    SELECT * FROM fg_candidate_occurrences('__fg_at_cands', run, prompt_tag, min_weight, min_rel_weight, max_p,
                                           experiment)
)
SELECT * FROM fg_chains_in('__fg_at_cands', '__fg_at_occs', threshold, n_edges, sign_pattern);

-- Recurring paths across prompts ---------------------------------------------------------------
-- As in 0011 (same parameters, columns, ladder, ranking and ties), but the candidate edges at
-- max(min_support, 2) and their occurrences are read once, into __fg_rp_cands / __fg_rp_occs,
-- and each bound and step filters them by its threshold.
CREATE OR REPLACE MACRO recurring_paths(n_edges := 3, min_support := 2, run := NULL, min_layer := NULL,
                                        max_layer := NULL, sign_pattern := NULL, min_weight := 0,
                                        prompt_tag := NULL, min_rel_weight := 0, max_p := NULL,
                                        experiment := NULL, top := NULL, rank_by := 'support') AS TABLE
WITH
-- the candidate edges at the lowest threshold any step can use, and their occurrences: read once
__fg_rp_cands AS MATERIALIZED (
    SELECT * FROM fg_path_candidates(greatest(min_support, 2), run, min_layer, max_layer)
),
__fg_rp_occs AS MATERIALIZED (
    SELECT * FROM fg_candidate_occurrences('__fg_rp_cands', run, prompt_tag, min_weight, min_rel_weight, max_p,
                                           experiment)
),
checked AS MATERIALIZED (
    SELECT CASE WHEN NOT n_edges BETWEEN 2 AND 6 THEN error('n_edges must be between 2 and 6, got ' || n_edges)
                WHEN rank_by NOT IN ('support', 'strength')
                    THEN error('rank_by must be ''support'' or ''strength'', got ' || coalesce(rank_by, 'NULL'))
                WHEN top < 1 THEN error('top must be >= 1, got ' || top)
                ELSE greatest(min_support, 2) END AS floor_support,
           top IS NOT NULL AND rank_by = 'support' AS descend,
           (SELECT max(n) FROM __fg_rp_cands WHERE top IS NOT NULL) AS max_n
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
    FROM plan p, t1 t, fg_chain_bound_in('__fg_rp_cands', (SELECT threshold FROM t1), n_edges, sign_pattern) b
),
found1 AS MATERIALIZED (
    SELECT 1 AS level, *
    FROM fg_chains_in('__fg_rp_cands', '__fg_rp_occs', (SELECT threshold FROM g1), n_edges, sign_pattern)
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
    FROM plan p, t2 t, fg_chain_bound_in('__fg_rp_cands', (SELECT threshold FROM t2), n_edges, sign_pattern) b
),
found2 AS MATERIALIZED (
    SELECT 2 AS level, *
    FROM fg_chains_in('__fg_rp_cands', '__fg_rp_occs', (SELECT threshold FROM g2), n_edges, sign_pattern)
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
    FROM plan p, t3 t, fg_chain_bound_in('__fg_rp_cands', (SELECT threshold FROM t3), n_edges, sign_pattern) b
),
found3 AS MATERIALIZED (
    SELECT 3 AS level, *
    FROM fg_chains_in('__fg_rp_cands', '__fg_rp_occs', (SELECT threshold FROM g3), n_edges, sign_pattern)
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
    FROM plan p, t4 t, fg_chain_bound_in('__fg_rp_cands', (SELECT threshold FROM t4), n_edges, sign_pattern) b
),
found4 AS MATERIALIZED (
    SELECT 4 AS level, *
    FROM fg_chains_in('__fg_rp_cands', '__fg_rp_occs', (SELECT threshold FROM g4), n_edges, sign_pattern)
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
    FROM plan p, t5 t, fg_chain_bound_in('__fg_rp_cands', (SELECT threshold FROM t5), n_edges, sign_pattern) b
),
found5 AS MATERIALIZED (
    SELECT 5 AS level, *
    FROM fg_chains_in('__fg_rp_cands', '__fg_rp_occs', (SELECT threshold FROM g5), n_edges, sign_pattern)
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
    FROM plan p, t6 t, fg_chain_bound_in('__fg_rp_cands', (SELECT threshold FROM t6), n_edges, sign_pattern) b
),
found6 AS MATERIALIZED (
    SELECT 6 AS level, *
    FROM fg_chains_in('__fg_rp_cands', '__fg_rp_occs', (SELECT threshold FROM g6), n_edges, sign_pattern)
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
