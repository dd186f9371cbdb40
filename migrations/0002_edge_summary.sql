-- featuregraph schema, step 2: per-edge aggregates, and an index of recurring edges.
--
-- Both tables are derived from `edges`. The ingest writer keeps them up to date (store/
-- summary.py, called inside each write transaction); `featuregraph optimize` rebuilds and
-- sorts them (store/optimize.py). The sign of an edge is -1 when its weight is negative, +1
-- otherwise (a weight of exactly zero is below every edge floor and never stored).

CREATE MACRO fg_sign(weight) AS CAST(CASE WHEN weight < 0 THEN -1 ELSE 1 END AS TINYINT);

-- One row per signed edge of a run: in how many prompts it occurs with that sign (n), and the
-- sum and sum of squares of its weight over them (sums accumulate in DOUBLE and are stored
-- as REAL). first_prompt_id is the smallest prompt it occurs in: while n = 1 that single
-- occurrence is (first_prompt_id, sum_weight). n_sorted is n as of the last optimize when it
-- was >= 2 then (the edge's rows in edge_occurrences carry the same value), else NULL.
-- Sorted by (run_id, up_layer, up_feature, down_layer, down_feature, sign).
CREATE TABLE edge_summary (
    run_id          INTEGER NOT NULL,
    up_layer        SMALLINT NOT NULL,
    up_feature      INTEGER NOT NULL,
    down_layer      SMALLINT NOT NULL,
    down_feature    INTEGER NOT NULL,
    sign            TINYINT NOT NULL,              -- -1 or +1
    n               INTEGER NOT NULL,
    sum_weight      REAL NOT NULL,
    sum_sq_weight   REAL NOT NULL,
    first_prompt_id INTEGER NOT NULL,
    n_sorted        INTEGER
);

-- Every occurrence of a signed edge that occurs in two or more prompts (n >= 2 above): the
-- rows recurring-path and path queries read instead of scanning or self-joining `edges`.
-- Rows written since the last optimize have n_sorted NULL and sit at the end; the others are
-- sorted by (run_id, n_sorted DESC, edge, prompt_id), so that "edges in at least S prompts"
-- is a prefix that zone maps find without reading the rest.
CREATE TABLE edge_occurrences (
    run_id          INTEGER NOT NULL,
    n_sorted        INTEGER,
    up_layer        SMALLINT NOT NULL,
    up_feature      INTEGER NOT NULL,
    down_layer      SMALLINT NOT NULL,
    down_feature    INTEGER NOT NULL,
    sign            TINYINT NOT NULL,
    prompt_id       INTEGER NOT NULL,
    weight          REAL NOT NULL
);

-- Databases written before this step: derive both from the edges already stored.
INSERT INTO edge_summary
SELECT run_id, up_layer, up_feature, down_layer, down_feature, fg_sign(weight) AS sign,
       count(*), sum(weight::DOUBLE), sum(weight::DOUBLE * weight::DOUBLE), min(prompt_id),
       CASE WHEN count(*) >= 2 THEN count(*) END
FROM edges
GROUP BY run_id, up_layer, up_feature, down_layer, down_feature, fg_sign(weight)
ORDER BY run_id, up_layer, up_feature, down_layer, down_feature, sign;

INSERT INTO edge_occurrences
SELECT e.run_id, s.n_sorted, e.up_layer, e.up_feature, e.down_layer, e.down_feature, s.sign,
       e.prompt_id, e.weight
FROM edges e
JOIN edge_summary s
    ON s.run_id = e.run_id AND s.up_layer = e.up_layer AND s.up_feature = e.up_feature
   AND s.down_layer = e.down_layer AND s.down_feature = e.down_feature
   AND s.sign = fg_sign(e.weight) AND s.n >= 2
ORDER BY e.run_id, s.n_sorted DESC, e.up_layer, e.up_feature, e.down_layer, e.down_feature, s.sign,
         e.prompt_id;
