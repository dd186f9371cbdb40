-- featuregraph schema, step 3: the query layer, as macros and views that live in the database,
-- so that plain SQL (the duckdb CLI, any DuckDB client) can use them. docs/sql.md documents
-- each one; the Python API (query/) and `featuregraph query` call them with bound parameters.
--
-- Features are named 'L.F' (layer.feature, e.g. '5.10603'). Sign convention everywhere:
-- ablated minus clean. `run` parameters default to NULL = every run; results carry run_id.

-- Feature names ----------------------------------------------------------------------------

CREATE MACRO fg_node(layer, feature) AS CAST(layer AS VARCHAR) || '.' || CAST(feature AS VARCHAR);

CREATE MACRO fg_check_node(node) AS
    CASE WHEN regexp_full_match(node, '[0-9]+\.[0-9]+') THEN node
         ELSE error('not a feature name of the form LAYER.FEATURE (e.g. 5.10603): ' || coalesce(node, 'NULL'))
    END;

CREATE MACRO fg_layer(node) AS CAST(split_part(fg_check_node(node), '.', 1) AS SMALLINT);

CREATE MACRO fg_feature(node) AS CAST(split_part(fg_check_node(node), '.', 2) AS INTEGER);

-- Views ------------------------------------------------------------------------------------

-- Per signed edge across the prompts of a run: count, mean and standard deviation.
CREATE VIEW edge_stats AS
SELECT run_id,
       fg_node(up_layer, up_feature) AS up,
       fg_node(down_layer, down_feature) AS down,
       up_layer, up_feature, down_layer, down_feature, sign, n,
       sum_weight / n AS mean_weight,
       CASE WHEN n > 1 THEN sqrt(greatest((sum_sq_weight - sum_weight * sum_weight / n) / (n - 1), 0)) END
           AS std_weight
FROM edge_summary;

-- One prompt's graph, pruned the seed's way ------------------------------------------------
-- Edges with |weight| >= min_weight; the top k per upstream (ablated) feature by |weight|;
-- then only edges on a path of at least min_path edges within what is left.
-- path_len is the longest such path through the edge.
CREATE MACRO prompt_graph(prompt, run := NULL, k := 10, min_path := 2, min_weight := 0) AS TABLE
WITH RECURSIVE
ranked AS (
    SELECT e.*,
           row_number() OVER (PARTITION BY e.run_id, e.up_layer, e.up_feature
                              ORDER BY abs(e.weight) DESC, e.down_layer, e.down_feature) AS edge_rank
    FROM edges e
    WHERE e.prompt_id = prompt AND (run IS NULL OR e.run_id = run) AND abs(e.weight) >= min_weight
),
kept AS MATERIALIZED (SELECT * FROM ranked WHERE edge_rank <= k),
-- depth: number of edges of some path of kept edges ending at (into_node) / starting at (out_of) a node
into_node(run_id, layer, feature, depth) AS (
    SELECT run_id, up_layer, up_feature, 0 FROM kept
    UNION
    SELECT e.run_id, e.down_layer, e.down_feature, p.depth + 1
    FROM into_node p JOIN kept e ON e.run_id = p.run_id AND e.up_layer = p.layer AND e.up_feature = p.feature
),
out_of(run_id, layer, feature, depth) AS (
    SELECT run_id, down_layer, down_feature, 0 FROM kept
    UNION
    SELECT e.run_id, e.up_layer, e.up_feature, p.depth + 1
    FROM out_of p JOIN kept e ON e.run_id = p.run_id AND e.down_layer = p.layer AND e.down_feature = p.feature
),
before AS (SELECT run_id, layer, feature, max(depth) AS depth FROM into_node GROUP BY ALL),
after AS (SELECT run_id, layer, feature, max(depth) AS depth FROM out_of GROUP BY ALL)
SELECT e.run_id, e.prompt_id,
       fg_node(e.up_layer, e.up_feature) AS up,
       fg_node(e.down_layer, e.down_feature) AS down,
       e.up_layer, e.up_feature, e.down_layer, e.down_feature, e.weight, e.edge_rank,
       b.depth + 1 + a.depth AS path_len
FROM kept e
JOIN before b ON b.run_id = e.run_id AND b.layer = e.up_layer AND b.feature = e.up_feature
JOIN after a ON a.run_id = e.run_id AND a.layer = e.down_layer AND a.feature = e.down_feature
WHERE b.depth + 1 + a.depth >= min_path
ORDER BY e.run_id, e.up_layer, e.up_feature, e.edge_rank;

-- Recurring paths across prompts -----------------------------------------------------------
-- Chains of n_edges (2 to 6) edges u0 -> u1 -> ... through consecutive layers with the same
-- features and sign pattern, and their support: the number of prompts in which the whole
-- chain occurs (every edge with |weight| >= min_weight). Candidate edges come from
-- edge_summary (a chain cannot occur in more prompts than its rarest edge) and must lie on a
-- chain of n_edges candidates; their occurrences come from edge_occurrences. Chains grow one
-- edge at a time and are only extended while they and their tails occur in min_support
-- prompts (a longer chain cannot occur more often than its parts).
-- sign_pattern: NULL, or a list of n_edges entries of -1, +1 or 0 (either sign). A path seen in
-- one prompt does not recur: min_support below 2 counts as 2.
CREATE MACRO recurring_paths(n_edges := 3, min_support := 2, run := NULL, min_layer := NULL,
                             max_layer := NULL, sign_pattern := NULL, min_weight := 0,
                             prompt_tag := NULL) AS TABLE
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
    WHERE o.n_sorted >= greatest(min_support, 2)
    UNION ALL
    SELECT o.*, u.eid, u.up_node, u.down_node
    FROM edge_occurrences o
    JOIN cand u ON u.run_id = o.run_id AND u.up_layer = o.up_layer AND u.up_feature = o.up_feature
               AND u.down_feature = o.down_feature AND u.sign = o.sign
    WHERE o.n_sorted IS NULL
    UNION ALL
    SELECT o.*, u.eid, u.up_node, u.down_node
    FROM edge_occurrences o
    JOIN (SELECT * FROM lagging LIMIT 131071) u
      ON u.run_id = o.run_id AND u.n_sorted = o.n_sorted AND u.up_layer = o.up_layer
     AND u.up_feature = o.up_feature AND u.down_feature = o.down_feature AND u.sign = o.sign
    WHERE o.n_sorted < greatest(min_support, 2)
),
occ AS MATERIALIZED (
    -- at_key / to_key: the edge's upstream / downstream feature in its prompt, packed in 63 bits
    SELECT (CAST(run_id AS BIGINT) << 50) + (CAST(prompt_id AS BIGINT) << 18) + up_node AS at_key,
           (CAST(run_id AS BIGINT) << 50) + (CAST(prompt_id AS BIGINT) << 18) + down_node AS to_key,
           sign, eid, weight
    FROM occ_rows o
    WHERE abs(o.weight) >= min_weight
      AND (run IS NULL OR o.run_id = run)
      AND (prompt_tag IS NULL OR (o.run_id, o.prompt_id) IN (
            SELECT (p.run_id, p.prompt_id) FROM prompts p WHERE p.tag = prompt_tag))
),
-- lK: the chains of K edges in each prompt (chain: packed edge ids; to_key: where it ends;
-- wI: the I-th weight); fK: the K-edge chains found in at least min_support prompts.
l1 AS (
    SELECT eid AS chain, to_key, weight AS w1
    FROM occ
    WHERE coalesce(sign_pattern[1], 0) IN (0, sign)
),
l2 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.w1, o.weight AS w2
    FROM l1 c
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 2 AND coalesce(sign_pattern[2], 0) IN (0, o.sign)
),
f2 AS (SELECT chain FROM l2 GROUP BY chain HAVING count(*) >= greatest(min_support, 2)),
l3 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.w1, c.w2, o.weight AS w3
    FROM l2 c
    SEMI JOIN f2 f ON f.chain = c.chain
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 3 AND coalesce(sign_pattern[3], 0) IN (0, o.sign)
      AND ((c.chain & ((CAST(1 AS HUGEINT) << 17) - 1)) << 17) + o.eid IN (SELECT chain FROM f2)
),
f3 AS (SELECT chain FROM l3 GROUP BY chain HAVING count(*) >= greatest(min_support, 2)),
l4 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.w1, c.w2, c.w3, o.weight AS w4
    FROM l3 c
    SEMI JOIN f3 f ON f.chain = c.chain
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 4 AND coalesce(sign_pattern[4], 0) IN (0, o.sign)
      AND ((c.chain & ((CAST(1 AS HUGEINT) << 34) - 1)) << 17) + o.eid IN (SELECT chain FROM f3)
),
f4 AS (SELECT chain FROM l4 GROUP BY chain HAVING count(*) >= greatest(min_support, 2)),
l5 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.w1, c.w2, c.w3, c.w4, o.weight AS w5
    FROM l4 c
    SEMI JOIN f4 f ON f.chain = c.chain
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 5 AND coalesce(sign_pattern[5], 0) IN (0, o.sign)
      AND ((c.chain & ((CAST(1 AS HUGEINT) << 51) - 1)) << 17) + o.eid IN (SELECT chain FROM f4)
),
f5 AS (SELECT chain FROM l5 GROUP BY chain HAVING count(*) >= greatest(min_support, 2)),
l6 AS MATERIALIZED (
    SELECT (c.chain << 17) + o.eid AS chain, o.to_key, c.w1, c.w2, c.w3, c.w4, c.w5, o.weight AS w6
    FROM l5 c
    SEMI JOIN f5 f ON f.chain = c.chain
    JOIN occ o ON o.at_key = c.to_key
    WHERE n_edges >= 6 AND coalesce(sign_pattern[6], 0) IN (0, o.sign)
      AND ((c.chain & ((CAST(1 AS HUGEINT) << 68) - 1)) << 17) + o.eid IN (SELECT chain FROM f5)
),
chains AS (
    SELECT chain, to_key, w1, w2, CAST(NULL AS REAL) AS w3, CAST(NULL AS REAL) AS w4, CAST(NULL AS REAL) AS w5, CAST(NULL AS REAL) AS w6 FROM l2 WHERE n_edges = 2
    UNION ALL SELECT chain, to_key, w1, w2, w3, CAST(NULL AS REAL) AS w4, CAST(NULL AS REAL) AS w5, CAST(NULL AS REAL) AS w6 FROM l3 WHERE n_edges = 3
    UNION ALL SELECT chain, to_key, w1, w2, w3, w4, CAST(NULL AS REAL) AS w5, CAST(NULL AS REAL) AS w6 FROM l4 WHERE n_edges = 4
    UNION ALL SELECT chain, to_key, w1, w2, w3, w4, w5, CAST(NULL AS REAL) AS w6 FROM l5 WHERE n_edges = 5
    UNION ALL SELECT chain, to_key, w1, w2, w3, w4, w5, w6 FROM l6 WHERE n_edges = 6
),
counted AS MATERIALIZED (
    SELECT chain, count(DISTINCT to_key >> 18) AS support,
           [avg(w1), avg(w2), avg(w3), avg(w4), avg(w5), avg(w6)][1:n_edges] AS mean_weights
    FROM chains
    GROUP BY chain
    HAVING count(DISTINCT to_key >> 18) >= greatest(min_support, 2)
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
       d.signs, c.support, c.mean_weights, d.start_layer,
       list_append(d.ups, d.last_feature) AS features
FROM counted c
JOIN decoded d ON d.chain = c.chain
ORDER BY c.support DESC, d.run_id, d.start_layer, features, d.signs;

-- Prompts that contain a given path --------------------------------------------------------
-- path_nodes: a list of 'L.F' names, e.g. ['5.10', '6.20', '7.30']; sign_pattern as for
-- recurring_paths. One row per prompt in which every edge of the path occurs (with
-- |weight| >= min_weight), with the weights in path order. Reads edge_summary (edges seen in
-- one prompt) and edge_occurrences (the others), never all of `edges`.
CREATE MACRO path_prompts(path_nodes, run := NULL, sign_pattern := NULL, min_weight := 0,
                          prompt_tag := NULL) AS TABLE
WITH
nodes AS (
    SELECT i, fg_layer(path_nodes[i]) AS layer, fg_feature(path_nodes[i]) AS feature
    FROM (SELECT unnest(generate_series(1, len(path_nodes))) AS i)
),
steps AS (
    SELECT a.i AS step, a.layer AS up_layer, a.feature AS up_feature, b.layer AS down_layer,
           b.feature AS down_feature, coalesce(sign_pattern[a.i], 0) AS want_sign
    FROM nodes a JOIN nodes b ON b.i = a.i + 1
    WHERE CASE WHEN len(path_nodes) BETWEEN 2 AND 7 THEN true
               ELSE error('a path has 2 to 7 features, got ' || len(path_nodes)) END
),
-- The path's edges as the summary knows them: one lookup per step, with constants, so that
-- zone maps skip the rest of edge_summary (a path has at most 7 features).
candidates AS (
    SELECT 1 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 1 AND up_layer = TRY_CAST(split_part(path_nodes[1], '.', 1) AS SMALLINT) AND up_feature = TRY_CAST(split_part(path_nodes[1], '.', 2) AS INTEGER)
      AND down_layer = TRY_CAST(split_part(path_nodes[2], '.', 1) AS SMALLINT) AND down_feature = TRY_CAST(split_part(path_nodes[2], '.', 2) AS INTEGER)
    UNION ALL
    SELECT 2 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 2 AND up_layer = TRY_CAST(split_part(path_nodes[2], '.', 1) AS SMALLINT) AND up_feature = TRY_CAST(split_part(path_nodes[2], '.', 2) AS INTEGER)
      AND down_layer = TRY_CAST(split_part(path_nodes[3], '.', 1) AS SMALLINT) AND down_feature = TRY_CAST(split_part(path_nodes[3], '.', 2) AS INTEGER)
    UNION ALL
    SELECT 3 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 3 AND up_layer = TRY_CAST(split_part(path_nodes[3], '.', 1) AS SMALLINT) AND up_feature = TRY_CAST(split_part(path_nodes[3], '.', 2) AS INTEGER)
      AND down_layer = TRY_CAST(split_part(path_nodes[4], '.', 1) AS SMALLINT) AND down_feature = TRY_CAST(split_part(path_nodes[4], '.', 2) AS INTEGER)
    UNION ALL
    SELECT 4 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 4 AND up_layer = TRY_CAST(split_part(path_nodes[4], '.', 1) AS SMALLINT) AND up_feature = TRY_CAST(split_part(path_nodes[4], '.', 2) AS INTEGER)
      AND down_layer = TRY_CAST(split_part(path_nodes[5], '.', 1) AS SMALLINT) AND down_feature = TRY_CAST(split_part(path_nodes[5], '.', 2) AS INTEGER)
    UNION ALL
    SELECT 5 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 5 AND up_layer = TRY_CAST(split_part(path_nodes[5], '.', 1) AS SMALLINT) AND up_feature = TRY_CAST(split_part(path_nodes[5], '.', 2) AS INTEGER)
      AND down_layer = TRY_CAST(split_part(path_nodes[6], '.', 1) AS SMALLINT) AND down_feature = TRY_CAST(split_part(path_nodes[6], '.', 2) AS INTEGER)
    UNION ALL
    SELECT 6 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 6 AND up_layer = TRY_CAST(split_part(path_nodes[6], '.', 1) AS SMALLINT) AND up_feature = TRY_CAST(split_part(path_nodes[6], '.', 2) AS INTEGER)
      AND down_layer = TRY_CAST(split_part(path_nodes[7], '.', 1) AS SMALLINT) AND down_feature = TRY_CAST(split_part(path_nodes[7], '.', 2) AS INTEGER)
),
known AS MATERIALIZED (
    SELECT c.*
    FROM candidates c
    JOIN steps t ON t.step = c.step
    WHERE (run IS NULL OR c.run_id = run) AND t.want_sign IN (0, c.sign)
),
-- (LIMITs cap the planner's estimates of the few path edges; see recurring_paths)
hits AS (
    SELECT run_id, first_prompt_id AS prompt_id, step, CAST(sum_weight AS REAL) AS weight
    FROM known WHERE n = 1
    UNION ALL
    SELECT k.run_id, o.prompt_id, k.step, o.weight
    FROM edge_occurrences o
    JOIN (SELECT * FROM known WHERE n_sorted IS NOT NULL LIMIT 1000) k
      ON k.run_id = o.run_id AND k.n_sorted = o.n_sorted AND k.up_layer = o.up_layer
     AND k.up_feature = o.up_feature AND k.down_layer = o.down_layer
     AND k.down_feature = o.down_feature AND k.sign = o.sign
    UNION ALL
    SELECT k.run_id, o.prompt_id, k.step, o.weight
    FROM edge_occurrences o
    JOIN (SELECT * FROM known WHERE n >= 2 LIMIT 1000) k
      ON k.run_id = o.run_id AND k.up_layer = o.up_layer AND k.up_feature = o.up_feature
     AND k.down_layer = o.down_layer AND k.down_feature = o.down_feature AND k.sign = o.sign
    WHERE o.n_sorted IS NULL
)
SELECT h.run_id, h.prompt_id, p.tag, p.text,
       list(h.weight ORDER BY h.step) AS weights,
       min(abs(h.weight)) AS min_abs_weight
FROM hits h
JOIN prompts p ON p.run_id = h.run_id AND p.prompt_id = h.prompt_id
WHERE abs(h.weight) >= min_weight AND (prompt_tag IS NULL OR p.tag = prompt_tag)
GROUP BY h.run_id, h.prompt_id, p.tag, p.text
HAVING count(DISTINCT h.step) = len(path_nodes) - 1
ORDER BY min_abs_weight DESC, h.run_id, h.prompt_id;

-- A feature's neighbourhood across prompts -------------------------------------------------
-- In- and out-edges of `node`, one row per neighbour (both signs together) seen in at least
-- min_count prompts: n prompts, n_pos / n_neg of them with a positive / negative weight, mean
-- and standard deviation of the weight, and sign_consistency = max(n_pos, n_neg) / n.
-- top: at most this many neighbours per direction (by n, then |mean|); NULL for all.
CREATE MACRO feature_edges(node, run := NULL, top := 20, min_count := 1) AS TABLE
WITH sides AS (
    SELECT 'out' AS direction, run_id, down_layer AS layer, down_feature AS feature, sign, n,
           sum_weight, sum_sq_weight
    FROM edge_summary
    WHERE up_layer = fg_layer(node) AND up_feature = fg_feature(node) AND (run IS NULL OR run_id = run)
    UNION ALL
    SELECT 'in', run_id, up_layer, up_feature, sign, n, sum_weight, sum_sq_weight
    FROM edge_summary
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

-- A feature's logit effects, aggregated over the prompts where it was ablated ------------
-- mean_dlogp / mean_dprob average over every ablation of the feature (a token outside an
-- ablation's stored top-k counts as 0 there); 'promoted' tokens are those whose probability
-- ablating the feature raises on average, 'suppressed' those it lowers. n_prompts: ablations
-- in which the token was among the stored top-k.
CREATE MACRO feature_logits(node, run := NULL, top := 10) AS TABLE
WITH le AS (
    SELECT run_id, prompt_id, token_id, dlogp, dprob
    FROM logit_effects
    WHERE layer = fg_layer(node) AND feature = fg_feature(node) AND (run IS NULL OR run_id = run)
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

-- Top-activating contexts of a feature -----------------------------------------------------
-- The `top` prompts (per run) where the feature's clean activation peaks highest, with the
-- prompt's tokens and the feature's activation at each (0 where it was not active).
CREATE MACRO top_contexts(node, run := NULL, top := 10) AS TABLE
WITH act AS (
    SELECT run_id, prompt_id, position, activation
    FROM activations
    WHERE layer = fg_layer(node) AND feature = fg_feature(node) AND (run IS NULL OR run_id = run)
),
best AS MATERIALIZED (
    SELECT run_id, prompt_id, max(activation) AS max_activation,
           arg_max(position, activation) AS max_position
    FROM act
    GROUP BY run_id, prompt_id
    QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY max(activation) DESC, prompt_id) <= top
),
context AS (
    SELECT t.run_id, t.prompt_id,
           list(t.token ORDER BY t.position) AS tokens,
           list(coalesce(a.activation, 0) ORDER BY t.position) AS token_activations
    FROM tokens t
    SEMI JOIN best b ON b.run_id = t.run_id AND b.prompt_id = t.prompt_id
    LEFT JOIN act a ON a.run_id = t.run_id AND a.prompt_id = t.prompt_id AND a.position = t.position
    GROUP BY t.run_id, t.prompt_id
)
SELECT b.run_id,
       row_number() OVER (PARTITION BY b.run_id ORDER BY b.max_activation DESC, b.prompt_id) AS context_rank,
       b.prompt_id, b.max_activation, b.max_position, p.text, c.tokens, c.token_activations
FROM best b
JOIN prompts p ON p.run_id = b.run_id AND p.prompt_id = b.prompt_id
JOIN context c ON c.run_id = b.run_id AND c.prompt_id = b.prompt_id
ORDER BY b.run_id, context_rank;

-- Two prompts' graphs side by side ---------------------------------------------------------
-- Every edge with |weight| >= min_weight in either prompt: status 'shared' (both, with
-- same_sign telling whether the weights agree in sign), 'only_a' or 'only_b'.
CREATE MACRO compare_prompts(prompt_a, prompt_b, run := NULL, min_weight := 0) AS TABLE
WITH a AS (
    SELECT run_id, up_layer, up_feature, down_layer, down_feature, weight FROM edges
    WHERE prompt_id = prompt_a AND (run IS NULL OR run_id = run) AND abs(weight) >= min_weight
),
b AS (
    SELECT run_id, up_layer, up_feature, down_layer, down_feature, weight FROM edges
    WHERE prompt_id = prompt_b AND (run IS NULL OR run_id = run) AND abs(weight) >= min_weight
)
SELECT run_id,
       CASE WHEN a.weight IS NULL THEN 'only_b' WHEN b.weight IS NULL THEN 'only_a' ELSE 'shared' END AS status,
       fg_node(up_layer, up_feature) AS up,
       fg_node(down_layer, down_feature) AS down,
       up_layer, up_feature, down_layer, down_feature,
       a.weight AS weight_a, b.weight AS weight_b,
       CASE WHEN a.weight IS NOT NULL AND b.weight IS NOT NULL THEN fg_sign(a.weight) = fg_sign(b.weight) END
           AS same_sign
FROM a FULL OUTER JOIN b USING (run_id, up_layer, up_feature, down_layer, down_feature)
ORDER BY run_id, CASE status WHEN 'shared' THEN 0 WHEN 'only_a' THEN 1 ELSE 2 END, up_layer, up_feature,
         down_layer, down_feature;
