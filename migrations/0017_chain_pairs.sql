-- featuregraph schema, step 17: a pair index, so that top-k recurring paths do not enumerate
-- every chain of the candidate edges at low support.
--
-- A chain of K >= 2 edges occurs in a prompt only where each of its consecutive pairs of edges
-- (a -> b, b -> c: a 2-chain) does, so its support is at most the smallest support of its
-- pairs. On wide, hub-heavy data most pairs of candidate edges co-occur in a handful of
-- prompts: the level-wise search (0011/0016) spent nearly all its time counting those, at
-- every call. The pair index counts them once per compaction instead:
--
-- - chain_pair_floors: per run, `floor`: every 2-chain seen in at least `floor` prompts of the
--   summary base is in the index (floor >= 2; store/chain_pairs.py chooses it from the run's
--   prompts and a size budget);
-- - chain_pairs_base: one row per (2-chain, prompt of the base in which it occurs), for those
--   2-chains, with n (the 2-chain's prompts in the base), both weights and both ablations'
--   largest |weight|. Sorted by (run_id, n DESC), so "2-chains in at least S prompts" is a
--   prefix.
--
-- Both are derived from edge_summary_base / edge_occurrences_base and rebuilt with them, in the
-- same transaction (a rebuild or a compaction), so they always describe the same prompts.
--
-- A search at support S >= floor may use the index. A chain's support is its base part plus
-- its delta part (prompts written since the last compaction; at most D of them): a chain that
-- reaches S has each 2-chain either indexed with n >= S - D, or outside the index (base part
-- <= floor - 1) and then in >= S - floor + 1 prompts of the delta. The candidate edges are the
-- edges of those indexed 2-chains, with their occurrences from the index and the delta, plus
-- the delta's edges in >= S - floor + 1 of its prompts, with all their occurrences (none after
-- a compaction): the same level-wise search (fg_chains_in) over far fewer rows gives the same
-- chains, supports and weights. Otherwise (no index for a run in scope, or S < floor) the
-- search reads edge_summary and edge_occurrences as before. recurring_paths keeps its parameters, columns, ladder, ranking
-- and ties: only fg_path_candidates and fg_candidate_occurrences choose the source.

CREATE TABLE chain_pairs_base (
    run_id       INTEGER NOT NULL,
    n            INTEGER NOT NULL,   -- prompts of the base in which the 2-chain occurs
    a_layer      SMALLINT NOT NULL,  -- the 2-chain a -> b -> c
    a_feature    INTEGER NOT NULL,
    b_layer      SMALLINT NOT NULL,
    b_feature    INTEGER NOT NULL,
    c_layer      SMALLINT NOT NULL,
    c_feature    INTEGER NOT NULL,
    ab_sign      TINYINT NOT NULL,
    bc_sign      TINYINT NOT NULL,
    prompt_id    INTEGER NOT NULL,
    ab_weight    REAL NOT NULL,
    bc_weight    REAL NOT NULL,
    ab_ablation_max_abs REAL,       -- the largest |weight| of each edge's ablation in that prompt
    bc_ablation_max_abs REAL
);

CREATE TABLE chain_pair_floors (
    run_id     INTEGER NOT NULL,
    floor      INTEGER,             -- every 2-chain in >= floor prompts of the base is indexed;
                                    -- NULL: the run has rows in the base but no index yet
    pairs      BIGINT NOT NULL,     -- 2-chains indexed
    pair_rows  BIGINT NOT NULL,     -- their rows in chain_pairs_base
    base_prompts INTEGER NOT NULL,  -- the run's prompts in the base when it was built
    built_at   TIMESTAMP NOT NULL
);

-- Runs already in the base when this migration runs have no index until their next compaction
-- (or `featuregraph optimize`); a run with no row here has nothing in the base.
INSERT INTO chain_pair_floors
SELECT run_id, NULL, 0, 0, 0, now() FROM (SELECT DISTINCT run_id FROM edge_summary_base);

-- Per run with rows in the delta: an upper bound on its prompts there (their id span: no
-- count(DISTINCT) over a delta that may hold tens of millions of rows).
CREATE MACRO fg_delta_prompt_bound(run) AS TABLE
SELECT run_id, max(prompt_id) - min(prompt_id) + 1 AS prompts
FROM edge_delta
WHERE run IS NULL OR run_id = run
GROUP BY run_id;

-- Per run in scope: its floor (the lowest support at which the pair index answers exactly;
-- NULL: it cannot, the run has rows in the base but no index) and the delta bound D.
CREATE MACRO fg_pair_index_reach(run) AS TABLE
SELECT r.run_id,
       -- no row: nothing of the run in the base (new since the last compaction), nothing to index
       CASE WHEN f.run_id IS NULL THEN 1 ELSE f.floor END AS floor,
       coalesce(d.prompts, 0) AS delta_prompts
FROM runs r
LEFT JOIN chain_pair_floors f ON f.run_id = r.run_id
LEFT JOIN fg_delta_prompt_bound(run) d ON d.run_id = r.run_id
WHERE run IS NULL OR r.run_id = run;

-- true when a search at `threshold` over `run` (NULL: every run) may read the pair index.
CREATE MACRO fg_pair_index_usable(threshold, run) AS (
    SELECT coalesce(bool_and(floor IS NOT NULL AND threshold >= floor), false)
    FROM fg_pair_index_reach(run)
);

-- fg_path_edges (0011: the signed edges with n >= threshold, same columns and rows) read from
-- the base and the delta tables rather than the edge_summary view, each behind the one-row
-- relation g, which is empty for a NULL threshold. A query that does not need this branch (the
-- pair index answers) then reads nothing at all: behind the view, the view's own joins (the
-- delta aggregated, the base scanned for it) ran whatever the outer join held, tens of seconds
-- with a large delta.
CREATE MACRO fg_path_edges_gated(threshold, run, min_layer, max_layer) AS TABLE
WITH
g AS MATERIALIZED (
    SELECT CAST(threshold AS INTEGER) AS at_least, CAST(-1 AS INTEGER) AS below_any WHERE threshold IS NOT NULL
),
base AS (
    SELECT b.run_id, b.up_layer, b.up_feature, b.down_layer, b.down_feature, b.sign, b.n
    FROM edge_summary_base b JOIN g ON b.up_feature > g.below_any
    WHERE (run IS NULL OR b.run_id = run) AND (min_layer IS NULL OR b.up_layer >= min_layer)
      AND (max_layer IS NULL OR b.down_layer <= max_layer)
),
delta AS (
    SELECT d.run_id, d.up_layer, d.up_feature, d.down_layer, d.down_feature, d.sign, count(*) AS n
    FROM edge_delta d JOIN g ON d.up_feature > g.below_any
    WHERE (run IS NULL OR d.run_id = run) AND (min_layer IS NULL OR d.up_layer >= min_layer)
      AND (max_layer IS NULL OR d.down_layer <= max_layer)
    GROUP BY ALL
)
SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign,
       CAST(coalesce(base.n, 0) + coalesce(delta.n, 0) AS INTEGER) AS n
FROM base FULL JOIN delta USING (run_id, up_layer, up_feature, down_layer, down_feature, sign)
WHERE coalesce(base.n, 0) + coalesce(delta.n, 0) >= (SELECT at_least FROM g);

-- The candidate edges of a search at `threshold`, as in 0016 (numbered eid, ends as node
-- numbers up_node / dest, n), plus from_index and pair_at_least. When fg_pair_index_usable
-- (S: threshold, F: the run's floor, D: its delta bound), a chain that reaches S is made of
-- 2-chains that are either indexed with n >= S - D, or outside the index (n <= F - 1 in the
-- base) and then in >= S - F + 1 prompts of the delta, as both their edges are. So the
-- candidates are the edges of those indexed 2-chains (from_index: their occurrences come from
-- the index and the delta) and the delta's edges in >= S - F + 1 of its prompts (from_index
-- false: every occurrence, from edge_occurrences; on a compacted database there are none).
-- n is an upper bound on the support of any chain through the edge, which is all the search
-- uses it for: a base part of at most max(largest indexed n, S - 1), and a delta part of at
-- most the edge's delta count (or, where that was not counted, min(D, S - F)).
-- Otherwise the signed edges with n >= threshold (fg_path_edges), from_index false.
CREATE OR REPLACE MACRO fg_path_candidates(threshold, run, min_layer, max_layer) AS TABLE
WITH
gate AS MATERIALIZED (SELECT fg_pair_index_usable(threshold, run) AS use_index),
reach AS MATERIALIZED (
    SELECT run_id, delta_prompts, threshold - delta_prompts AS pair_at_least,
           threshold - floor + 1 AS delta_at_least
    FROM fg_pair_index_reach(run) WHERE (SELECT use_index FROM gate)
),
pairs AS MATERIALIZED (
    SELECT p.run_id, p.n, p.a_layer, p.a_feature, p.b_layer, p.b_feature, p.c_layer, p.c_feature,
           p.ab_sign, p.bc_sign
    FROM chain_pairs_base p JOIN reach r ON r.run_id = p.run_id
    WHERE p.n >= r.pair_at_least
),
in_pairs AS (
    SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign, max(n) AS pair_n
    FROM (SELECT run_id, a_layer AS up_layer, a_feature AS up_feature, b_layer AS down_layer,
                 b_feature AS down_feature, ab_sign AS sign, n FROM pairs
          UNION ALL
          SELECT run_id, b_layer, b_feature, c_layer, c_feature, bc_sign, n FROM pairs)
    GROUP BY ALL
),
-- (only runs whose delta has as many prompts as the count needs: else no aggregation)
in_delta AS (
    SELECT d.run_id, d.up_layer, d.up_feature, d.down_layer, d.down_feature, d.sign, count(*) AS delta_n
    FROM edge_delta d
    JOIN (SELECT * FROM reach WHERE delta_at_least <= delta_prompts) r ON r.run_id = d.run_id
    GROUP BY ALL
    HAVING count(*) >= any_value(r.delta_at_least)
),
indexed AS (
    SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign,
           greatest(coalesce(i.pair_n, 0), threshold - 1)
               + coalesce(d.delta_n, least(r.delta_prompts, r.delta_at_least - 1)) AS n,
           d.run_id IS NULL AS from_index, r.pair_at_least
    FROM in_pairs i
    FULL JOIN in_delta d USING (run_id, up_layer, up_feature, down_layer, down_feature, sign)
    JOIN reach r USING (run_id)
    WHERE (min_layer IS NULL OR up_layer >= min_layer) AND (max_layer IS NULL OR down_layer <= max_layer)
),
useful AS MATERIALIZED (
    SELECT f.*, row_number() OVER () AS eid
    FROM (SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign, n, from_index, pair_at_least
          FROM indexed
          UNION ALL
          SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign, n, false, CAST(NULL AS BIGINT)
          FROM fg_path_edges_gated(CASE WHEN NOT (SELECT use_index FROM gate) THEN threshold END, run,
                                   min_layer, max_layer)) f
),
nodes AS MATERIALIZED (
    SELECT run_id, layer, feature, row_number() OVER () AS node
    FROM (SELECT run_id, up_layer AS layer, up_feature AS feature FROM useful
          UNION SELECT run_id, down_layer, down_feature FROM useful)
)
SELECT u.run_id, u.up_layer, u.up_feature, u.down_layer, u.down_feature, u.sign, u.n, u.eid,
       nu.node AS up_node, nd.node AS dest, u.from_index, u.pair_at_least
FROM useful u
JOIN nodes nu ON nu.run_id = u.run_id AND nu.layer = u.up_layer AND nu.feature = u.up_feature
JOIN nodes nd ON nd.run_id = u.run_id AND nd.layer = u.down_layer AND nd.feature = u.down_feature;

-- The strength filters on occurrence rows (the relation named `rows`: run_id, up_layer,
-- up_feature, weight, ablation_max_abs and any other columns, passed through): `strong`, with
-- p-values only when max_p asks for them (the ASOF join sorts). One body for the edge and the
-- pair-index occurrences.
CREATE MACRO fg_scored(rows, run, min_weight, min_rel_weight, max_p, experiment) AS TABLE
WITH
scored AS (
    SELECT r.*, CAST(NULL AS DOUBLE) AS p_value FROM query_table(rows) r WHERE max_p IS NULL
    UNION ALL
    SELECT r.*, (1 + nn.n_ge) / (1 + nn.n_samples) AS p_value
    FROM query_table(rows) r
    ASOF LEFT JOIN fg_edge_nulls(run, max_p, experiment) nn
      ON nn.run_id = r.run_id AND nn.layer = r.up_layer AND nn.feature = r.up_feature AND abs(r.weight) <= nn.value
    WHERE max_p IS NOT NULL
)
SELECT * EXCLUDE (ablation_max_abs, p_value),
       fg_strong(weight, ablation_max_abs, p_value, min_weight, min_rel_weight, max_p) AS strong
FROM scored;

-- As in 0016 (same parameters and columns), on fg_scored.
CREATE OR REPLACE MACRO fg_occurrences_of(keys, run, prompt_tag, min_weight, min_rel_weight, max_p, experiment) AS TABLE
WITH
__fg_key_rows AS (
    SELECT k.*, o.prompt_id, o.weight, o.ablation_max_abs
    FROM edge_occurrences o
    JOIN query_table(keys) k
      ON k.run_id = o.run_id AND k.up_layer = o.up_layer AND k.up_feature = o.up_feature
     AND k.down_layer = o.down_layer AND k.down_feature = o.down_feature AND k.sign = o.sign
    WHERE (prompt_tag IS NULL OR (o.run_id, o.prompt_id) IN (
            SELECT (p.run_id, p.prompt_id) FROM prompts p WHERE p.tag = prompt_tag))
)
SELECT * FROM fg_scored('__fg_key_rows', run, min_weight, min_rel_weight, max_p, experiment);

-- The occurrences of the signed edges in the relation named `keys`, each in >= 2 prompts
-- (candidates of a search: n >= threshold >= 2), as edge_occurrences lists them (the base's
-- occurrences, an edge's first occurrence when the base saw it once, its delta rows), read
-- from the tables behind the keys' runs: no keys, nothing read (see fg_path_edges_gated).
CREATE MACRO fg_key_occurrences(keys) AS TABLE
WITH
key_runs AS MATERIALIZED (SELECT DISTINCT run_id FROM query_table(keys))
SELECT k.*, o.prompt_id, o.weight, o.ablation_max_abs
FROM edge_occurrences_base o
SEMI JOIN key_runs g ON g.run_id = o.run_id
JOIN query_table(keys) k
  ON k.run_id = o.run_id AND k.up_layer = o.up_layer AND k.up_feature = o.up_feature
 AND k.down_layer = o.down_layer AND k.down_feature = o.down_feature AND k.sign = o.sign
UNION ALL
SELECT k.*, b.first_prompt_id, b.sum_weight, b.first_ablation_max_abs
FROM edge_summary_base b
SEMI JOIN key_runs g ON g.run_id = b.run_id
JOIN query_table(keys) k
  ON k.run_id = b.run_id AND k.up_layer = b.up_layer AND k.up_feature = b.up_feature
 AND k.down_layer = b.down_layer AND k.down_feature = b.down_feature AND k.sign = b.sign
WHERE b.n = 1
UNION ALL
SELECT k.*, d.prompt_id, d.weight, d.ablation_max_abs
FROM edge_delta d
SEMI JOIN key_runs g ON g.run_id = d.run_id
JOIN query_table(keys) k
  ON k.run_id = d.run_id AND k.up_layer = d.up_layer AND k.up_feature = d.up_feature
 AND k.down_layer = d.down_layer AND k.down_feature = d.down_feature AND k.sign = d.sign;

-- The occurrences the search needs of the candidates in the relation named `cands`
-- (fg_path_candidates), one row per occurrence, in the columns fg_chains_in reads. Candidates
-- from the index: the edges' occurrences in the prompts of their indexed 2-chains with
-- n >= pair_at_least (every base prompt in which a chain that can reach the threshold occurs),
-- and all their rows in the delta. The others: every occurrence (edge_occurrences).
CREATE OR REPLACE MACRO fg_candidate_occurrences(cands, run, prompt_tag, min_weight, min_rel_weight, max_p,
                                                 experiment) AS TABLE
WITH
__fg_full_keys AS (SELECT * FROM query_table(cands) WHERE NOT from_index),
__fg_index_keys AS MATERIALIZED (SELECT * FROM query_table(cands) WHERE from_index),
__fg_pair_rows AS (
    SELECT p.* FROM chain_pairs_base p
    JOIN (SELECT run_id, max(pair_at_least) AS at_least FROM __fg_index_keys GROUP BY run_id) r
      ON r.run_id = p.run_id
    WHERE p.n >= r.at_least
),
-- (the index's rows repeat an edge's occurrence once per indexed 2-chain through it; the
-- delta's rows are joined with the keys before anything else touches them)
__fg_index_rows AS (
    SELECT k.*, o.prompt_id, o.weight, o.ablation_max_abs
    FROM (SELECT DISTINCT * FROM (
              SELECT run_id, a_layer AS up_layer, a_feature AS up_feature, b_layer AS down_layer,
                     b_feature AS down_feature, ab_sign AS sign, prompt_id, ab_weight AS weight,
                     ab_ablation_max_abs AS ablation_max_abs
              FROM __fg_pair_rows
              UNION ALL
              SELECT run_id, b_layer, b_feature, c_layer, c_feature, bc_sign, prompt_id, bc_weight,
                     bc_ablation_max_abs
              FROM __fg_pair_rows)) o
    JOIN __fg_index_keys k
      ON k.run_id = o.run_id AND k.up_layer = o.up_layer AND k.up_feature = o.up_feature
     AND k.down_layer = o.down_layer AND k.down_feature = o.down_feature AND k.sign = o.sign
    WHERE (prompt_tag IS NULL OR (o.run_id, o.prompt_id) IN (
            SELECT (p.run_id, p.prompt_id) FROM prompts p WHERE p.tag = prompt_tag))
    UNION ALL
    SELECT k.*, d.prompt_id, d.weight, d.ablation_max_abs
    FROM edge_delta d
    JOIN __fg_index_keys k
      ON k.run_id = d.run_id AND k.up_layer = d.up_layer AND k.up_feature = d.up_feature
     AND k.down_layer = d.down_layer AND k.down_feature = d.down_feature AND k.sign = d.sign
    WHERE (prompt_tag IS NULL OR (d.run_id, d.prompt_id) IN (
            SELECT (p.run_id, p.prompt_id) FROM prompts p WHERE p.tag = prompt_tag))
),
__fg_full_rows AS (
    SELECT * FROM fg_key_occurrences('__fg_full_keys') o
    WHERE (prompt_tag IS NULL OR (o.run_id, o.prompt_id) IN (
            SELECT (p.run_id, p.prompt_id) FROM prompts p WHERE p.tag = prompt_tag))
),
__fg_all AS (
    SELECT * FROM fg_scored('__fg_full_rows', run, min_weight, min_rel_weight, max_p, experiment)
    UNION ALL BY NAME
    SELECT * FROM fg_scored('__fg_index_rows', run, min_weight, min_rel_weight, max_p, experiment)
)
SELECT (CAST(run_id AS BIGINT) << 32) + prompt_id AS rp, up_node, dest, eid, n, sign, weight, strong
FROM __fg_all;

-- Recurring paths across prompts ---------------------------------------------------------------
-- As in 0016 (same parameters, columns, ladder, ranking and ties), with a step 0 from the pair
-- index: on dense data the index's floor is raised by its size budget above the supports asked
-- for, and the 100th chain's support is usually far above it, so the top N come from the index
-- without reading edge_occurrences at all.
CREATE OR REPLACE MACRO recurring_paths(n_edges := 3, min_support := 2, run := NULL, min_layer := NULL,
                                        max_layer := NULL, sign_pattern := NULL, min_weight := 0,
                                        prompt_tag := NULL, min_rel_weight := 0, max_p := NULL,
                                        experiment := NULL, top := NULL, rank_by := 'support') AS TABLE
WITH
-- step 0: with top := N ranked by support, when the pair index covers every run in scope but
-- min_support is below its floor, the search first runs at the floor (the highest of the runs
-- in scope) from the index alone. If N chains reach it they are the answer: every chain with
-- that support or more is among them, so no chain below the floor can displace one.
__fg_rp0_at AS MATERIALIZED (
    SELECT CASE WHEN top IS NOT NULL AND rank_by = 'support' AND fg_pair_index_usable(f.floor, run)
                     AND f.floor > greatest(min_support, 2) THEN f.floor END AS threshold
    FROM (SELECT max(floor) AS floor FROM fg_pair_index_reach(run)) f
),
__fg_rp0_cands AS MATERIALIZED (
    SELECT * FROM fg_path_candidates((SELECT threshold FROM __fg_rp0_at), run, min_layer, max_layer)
),
__fg_rp0_occs AS MATERIALIZED (
    SELECT * FROM fg_candidate_occurrences('__fg_rp0_cands', run, prompt_tag, min_weight, min_rel_weight, max_p,
                                           experiment)
),
found0 AS MATERIALIZED (
    SELECT 0 AS level, *
    FROM fg_chains_in('__fg_rp0_cands', '__fg_rp0_occs', (SELECT threshold FROM __fg_rp0_at), n_edges, sign_pattern)
),
d0 AS MATERIALIZED (SELECT coalesce((SELECT count(*) FROM found0) >= top, false) AS done),
-- otherwise the candidate edges at the lowest threshold any step can use, and their
-- occurrences: read once (none when step 0 answered)
__fg_rp_cands AS MATERIALIZED (
    SELECT * FROM fg_path_candidates(CASE WHEN NOT (SELECT done FROM d0) THEN greatest(min_support, 2) END, run,
                                     min_layer, max_layer)
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
    FROM (SELECT * FROM found0 WHERE (SELECT done FROM d0)
    UNION ALL SELECT * FROM found1
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

-- Z-order of a signed edge's features within its layer pair (store.summary.rebuild_summary sorts
-- edge_summary_base by run, layers, then this): the bits of up_feature and down_feature
-- interleaved, so that a row group covers a small square of (up, down) features. A feature's
-- out-edges and its in-edges then each span about the square root of the layer pair's row
-- groups, where a sort by up_feature made the out-edges one row group and the in-edges all of
-- them (a feature's neighbourhood at 500 M edges read most of a 60 M-row segment for its
-- in-edges). fg_spread_bits(x): the 32 low bits of x moved to the even bit positions.
CREATE MACRO fg_spread_step(v, shift, mask) AS (v | (v << shift)) & mask;
CREATE MACRO fg_spread_bits(x) AS fg_spread_step(fg_spread_step(fg_spread_step(fg_spread_step(fg_spread_step(CAST(x AS UBIGINT) & CAST(4294967295 AS UBIGINT), 16, CAST(281470681808895 AS UBIGINT)), 8, CAST(71777214294589695 AS UBIGINT)), 4, CAST(1085102592571150095 AS UBIGINT)), 2, CAST(3689348814741910323 AS UBIGINT)), 1, CAST(6148914691236517205 AS UBIGINT));
CREATE MACRO fg_zorder(up_feature, down_feature) AS fg_spread_bits(up_feature) | (fg_spread_bits(down_feature) << 1);
