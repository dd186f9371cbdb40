-- featuregraph schema, step 12: writes that do not grow with the database.
--
-- Until now every ingest transaction looked its signed edges up in the whole edge_summary, so
-- a commit cost grew with the rows already stored. From here the summary has two parts:
--
-- - a base (edge_summary_base, edge_occurrences_base: the old tables, renamed), folded and
--   sorted only by a compaction (store/compact.py: `featuregraph optimize`, or automatically
--   once the delta passes a threshold);
-- - a delta (edge_delta): the signed edges of every prompt written since the last compaction,
--   each with its ablation's largest |weight|. An ingest transaction appends to it and looks
--   nothing up, so its cost depends only on its own rows.
--
-- edge_summary and edge_occurrences become views over base + delta with the same columns and
-- meanings as before, exact after every committed transaction. Right after a compaction the
-- delta is empty and they read the base alone.

ALTER TABLE edge_summary RENAME TO edge_summary_base;
ALTER TABLE edge_occurrences RENAME TO edge_occurrences_base;

-- One row per edge of a prompt written since the last compaction (all of an ablation's edges
-- land in one transaction, so ablation_max_abs is computed from the new rows alone).
CREATE TABLE edge_delta (
    run_id           INTEGER NOT NULL,
    prompt_id        INTEGER NOT NULL,
    up_layer         SMALLINT NOT NULL,
    up_feature       INTEGER NOT NULL,
    down_layer       SMALLINT NOT NULL,
    down_feature     INTEGER NOT NULL,
    sign             TINYINT NOT NULL,
    weight           REAL NOT NULL,
    ablation_max_abs REAL NOT NULL
);

-- The delta aggregated per signed edge (first_*: the occurrence in its smallest prompt).
CREATE VIEW edge_delta_summary AS
SELECT run_id, up_layer, up_feature, down_layer, down_feature, sign,
       count(*)::INTEGER AS n, sum(weight::DOUBLE) AS sum_weight,
       sum(weight::DOUBLE * weight::DOUBLE) AS sum_sq_weight, min(prompt_id) AS first_prompt_id,
       arg_min(ablation_max_abs, prompt_id) AS first_ablation_max_abs
FROM edge_delta
GROUP BY run_id, up_layer, up_feature, down_layer, down_feature, sign;

-- Base rows with the delta added, then the edges only the delta has. n_sorted stays the
-- base's (NULL for an edge new since the last compaction), as the path macros expect.
CREATE VIEW edge_summary AS
SELECT b.run_id, b.up_layer, b.up_feature, b.down_layer, b.down_feature, b.sign,
       b.n + coalesce(d.n, 0) AS n,
       CAST(b.sum_weight + coalesce(d.sum_weight, 0) AS REAL) AS sum_weight,
       CAST(b.sum_sq_weight + coalesce(d.sum_sq_weight, 0) AS REAL) AS sum_sq_weight,
       CASE WHEN d.first_prompt_id < b.first_prompt_id THEN d.first_prompt_id ELSE b.first_prompt_id END
           AS first_prompt_id,
       b.n_sorted,
       CASE WHEN d.first_prompt_id < b.first_prompt_id THEN d.first_ablation_max_abs
            ELSE b.first_ablation_max_abs END AS first_ablation_max_abs
FROM edge_summary_base b
LEFT JOIN edge_delta_summary d
    ON d.run_id = b.run_id AND d.up_layer = b.up_layer AND d.up_feature = b.up_feature
   AND d.down_layer = b.down_layer AND d.down_feature = b.down_feature AND d.sign = b.sign
UNION ALL
SELECT d.run_id, d.up_layer, d.up_feature, d.down_layer, d.down_feature, d.sign, d.n,
       CAST(d.sum_weight AS REAL), CAST(d.sum_sq_weight AS REAL), d.first_prompt_id,
       CAST(NULL AS INTEGER), CAST(d.first_ablation_max_abs AS REAL)
FROM edge_delta_summary d
ANTI JOIN edge_summary_base b
    ON d.run_id = b.run_id AND d.up_layer = b.up_layer AND d.up_feature = b.up_feature
   AND d.down_layer = b.down_layer AND d.down_feature = b.down_feature AND d.sign = b.sign;

-- Every occurrence of a signed edge in two or more prompts: the base's, the first occurrence of
-- an edge the base saw once and the delta again, and the delta's occurrences of edges that
-- recur over base + delta. Only the base's rows carry n_sorted.
CREATE VIEW edge_occurrences AS
SELECT run_id, n_sorted, up_layer, up_feature, down_layer, down_feature, sign, prompt_id, weight,
       ablation_max_abs
FROM edge_occurrences_base
UNION ALL
SELECT b.run_id, CAST(NULL AS INTEGER), b.up_layer, b.up_feature, b.down_layer, b.down_feature, b.sign,
       b.first_prompt_id, b.sum_weight, b.first_ablation_max_abs
FROM edge_summary_base b
SEMI JOIN edge_delta_summary d
    ON d.run_id = b.run_id AND d.up_layer = b.up_layer AND d.up_feature = b.up_feature
   AND d.down_layer = b.down_layer AND d.down_feature = b.down_feature AND d.sign = b.sign
WHERE b.n = 1
UNION ALL
SELECT e.run_id, CAST(NULL AS INTEGER), e.up_layer, e.up_feature, e.down_layer, e.down_feature, e.sign,
       e.prompt_id, e.weight, e.ablation_max_abs
FROM edge_delta e
JOIN (
    SELECT d.run_id, d.up_layer, d.up_feature, d.down_layer, d.down_feature, d.sign
    FROM edge_delta_summary d
    LEFT JOIN edge_summary_base b
        ON d.run_id = b.run_id AND d.up_layer = b.up_layer AND d.up_feature = b.up_feature
       AND d.down_layer = b.down_layer AND d.down_feature = b.down_feature AND d.sign = b.sign
    WHERE d.n + coalesce(b.n, 0) >= 2
) r
    ON r.run_id = e.run_id AND r.up_layer = e.up_layer AND r.up_feature = e.up_feature
   AND r.down_layer = e.down_layer AND r.down_feature = e.down_feature AND r.sign = e.sign;
