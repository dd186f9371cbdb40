-- featuregraph schema, step 14: feature names carry their site (docs/sql.md#feature-names).
--
-- Sites beyond the residual stream (run_saes.site_kind 'attn_z', 'mlp_out', 'transcoder') keep
-- the (layer, feature) columns of every table; their `feature` is stored ENCODED as
-- site_code * 2^28 + index (codes: resid 0, attn_z 1, mlp_out 2, transcoder 3), so a residual
-- feature is its plain index and every database written before this step already reads as
-- residual: nothing is rewritten. Names: 'L.F' (residual), 'L.res.F' (the same), 'L.att.F',
-- 'L.mlp.F', 'L.tc.F'. store/models.py (SITE_CODES, encode_feature, decode_feature) is the
-- Python twin of these macros; tests/test_feature_sites_sql.py checks that they agree.
--
-- fg_node, fg_check_node, fg_layer and fg_feature (0003) are redefined with their signatures
-- unchanged: every view and macro that names features (edge_stats, prompt_graph,
-- recurring_paths, feature_edges, ...) calls them and so becomes site-aware. path_prompts
-- parsed its names inline and is redefined here on fg_try_layer / fg_try_feature.

-- run_saes: one SAE per (layer, site kind), no longer per layer: a residual SAE and an attention
-- SAE of the same block (resid_pre L and attn.hook_z L are both layer L) live side by side.
-- DuckDB cannot alter a primary key, so the table is rebuilt with the same columns in the
-- same order; its rows are copied unchanged (every old row is 'resid').
CREATE TABLE run_saes_0014 (
    run_id          INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,
    site_kind       VARCHAR NOT NULL CHECK (site_kind IN ('resid', 'attn_z', 'mlp_out', 'transcoder')),
    hook_name       VARCHAR NOT NULL,
    d_in            INTEGER NOT NULL,
    d_sae           INTEGER NOT NULL,
    architecture    VARCHAR NOT NULL,
    release         VARCHAR,
    sae_id          VARCHAR,
    path            VARCHAR,
    sha256          VARCHAR NOT NULL,
    neuronpedia_id  VARCHAR,
    config          JSON NOT NULL,
    PRIMARY KEY (run_id, layer, site_kind)
);
INSERT INTO run_saes_0014 SELECT * FROM run_saes;
DROP TABLE run_saes;
ALTER TABLE run_saes_0014 RENAME TO run_saes;

-- The site of a site code and back, and the short name of each in feature names.
CREATE MACRO fg_site_code(site_kind) AS
    CASE site_kind WHEN 'resid' THEN 0 WHEN 'attn_z' THEN 1 WHEN 'mlp_out' THEN 2 WHEN 'transcoder' THEN 3 END;

CREATE MACRO fg_site_short(site_kind) AS
    CASE site_kind WHEN 'resid' THEN 'res' WHEN 'attn_z' THEN 'att' WHEN 'mlp_out' THEN 'mlp'
                   WHEN 'transcoder' THEN 'tc' END;

-- A stored feature -> its site kind (NULL for a value with no valid site code).
CREATE MACRO fg_feature_site(feature) AS
    CASE WHEN feature >= 0 THEN
        CASE CAST(feature // 268435456 AS INTEGER)
            WHEN 0 THEN 'resid' WHEN 1 THEN 'attn_z' WHEN 2 THEN 'mlp_out' WHEN 3 THEN 'transcoder' END
    END;

-- A stored feature -> the SAE unit's index within its own SAE.
CREATE MACRO fg_feature_index(feature) AS CAST(feature % 268435456 AS INTEGER);

-- (site kind, index) -> the stored feature; an error for an unknown site or an index outside [0, 2^28).
CREATE MACRO fg_feature_key(site_kind, index) AS
    CASE WHEN fg_site_code(site_kind) IS NULL
             THEN error('unknown site kind ' || coalesce('''' || site_kind || '''', 'NULL')
                        || '; expected one of resid, attn_z, mlp_out, transcoder')
         WHEN index IS NULL OR index < 0 OR index >= 268435456
             THEN error('feature index ' || coalesce(CAST(index AS VARCHAR), 'NULL')
                        || ' is outside [0, 2**28) = [0, 268435456)')
         ELSE CAST(fg_site_code(site_kind) * 268435456 + index AS INTEGER)
    END;

-- The grammar of a feature name: LAYER[.SITE].INDEX.
CREATE MACRO fg_name_pattern() AS '^([0-9]{1,5})(?:\.(res|att|mlp|tc))?\.([0-9]{1,9})$';

-- A name -> its layer / its stored feature, or NULL when it is not a feature name (no error:
-- these fold to constants, so a lookup by name keeps its zone-map pruning).
CREATE MACRO fg_try_layer(node) AS TRY_CAST(regexp_extract(node, fg_name_pattern(), 1) AS SMALLINT);

CREATE MACRO fg_try_feature(node) AS
    CASE WHEN TRY_CAST(regexp_extract(node, fg_name_pattern(), 3) AS BIGINT) < 268435456 THEN
        CAST(CASE regexp_extract(node, fg_name_pattern(), 2) WHEN 'att' THEN 1 WHEN 'mlp' THEN 2 WHEN 'tc' THEN 3
                                                             ELSE 0 END * 268435456
             + CAST(regexp_extract(node, fg_name_pattern(), 3) AS BIGINT) AS INTEGER)
    END;

-- Redefined from 0003 (same signatures) ---------------------------------------------------------

-- (layer, stored feature) -> 'L.F' for a residual feature, 'L.att.F' / 'L.mlp.F' / 'L.tc.F' otherwise.
-- (Residual keys take the old expression, the rest a CASE on the code spelled out: edge_stats
-- names every row. On 5M rows, load 6.6: residual keys cost what 0003's macro did (0.85 s),
-- 3/4 non-residual 1.24x it, nested macros 1.9x; tests/test_feature_sites_sql.py checks
-- the spelling against fg_site_short and Python.)
CREATE OR REPLACE MACRO fg_node(layer, feature) AS
    CASE WHEN feature BETWEEN 0 AND 268435455 THEN CAST(layer AS VARCHAR) || '.' || CAST(feature AS VARCHAR)
         ELSE CAST(layer AS VARCHAR) || '.'
              || CASE feature // 268435456 WHEN 1 THEN 'att.' WHEN 2 THEN 'mlp.' WHEN 3 THEN 'tc.' ELSE '?.' END
              || CAST(feature % 268435456 AS VARCHAR)
    END;

CREATE OR REPLACE MACRO fg_check_node(node) AS
    CASE WHEN fg_try_layer(node) IS NOT NULL AND fg_try_feature(node) IS NOT NULL THEN node
         ELSE error('not a feature name of the form LAYER.FEATURE or LAYER.SITE.FEATURE with SITE res, att, mlp '
                    || 'or tc and FEATURE < 2**28 (e.g. 5.10603, 5.att.12): ' || coalesce(node, 'NULL'))
    END;

CREATE OR REPLACE MACRO fg_layer(node) AS fg_try_layer(fg_check_node(node));

CREATE OR REPLACE MACRO fg_feature(node) AS fg_try_feature(fg_check_node(node));

-- The (layer, feature) key of a name, as a struct; an error for anything else.
CREATE MACRO fg_node_key(node) AS {'layer': fg_layer(node), 'feature': fg_feature(node)};

-- path_prompts -------------------------------------------------------------------------------------
-- Prompts that contain a given path: as in 0003 (same parameters and columns), with site-aware
-- names ('L.F', 'L.att.F', ...) looked up through fg_try_layer / fg_try_feature (constants, so
-- zone maps still skip the rest of edge_summary; `nodes` checks every name with fg_layer).
CREATE OR REPLACE MACRO path_prompts(path_nodes, run := NULL, sign_pattern := NULL, min_weight := 0,
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
    WHERE len(path_nodes) > 1 AND up_layer = fg_try_layer(path_nodes[1]) AND up_feature = fg_try_feature(path_nodes[1])
      AND down_layer = fg_try_layer(path_nodes[2]) AND down_feature = fg_try_feature(path_nodes[2])
    UNION ALL
    SELECT 2 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 2 AND up_layer = fg_try_layer(path_nodes[2]) AND up_feature = fg_try_feature(path_nodes[2])
      AND down_layer = fg_try_layer(path_nodes[3]) AND down_feature = fg_try_feature(path_nodes[3])
    UNION ALL
    SELECT 3 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 3 AND up_layer = fg_try_layer(path_nodes[3]) AND up_feature = fg_try_feature(path_nodes[3])
      AND down_layer = fg_try_layer(path_nodes[4]) AND down_feature = fg_try_feature(path_nodes[4])
    UNION ALL
    SELECT 4 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 4 AND up_layer = fg_try_layer(path_nodes[4]) AND up_feature = fg_try_feature(path_nodes[4])
      AND down_layer = fg_try_layer(path_nodes[5]) AND down_feature = fg_try_feature(path_nodes[5])
    UNION ALL
    SELECT 5 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 5 AND up_layer = fg_try_layer(path_nodes[5]) AND up_feature = fg_try_feature(path_nodes[5])
      AND down_layer = fg_try_layer(path_nodes[6]) AND down_feature = fg_try_feature(path_nodes[6])
    UNION ALL
    SELECT 6 AS step, * FROM edge_summary
    WHERE len(path_nodes) > 6 AND up_layer = fg_try_layer(path_nodes[6]) AND up_feature = fg_try_feature(path_nodes[6])
      AND down_layer = fg_try_layer(path_nodes[7]) AND down_feature = fg_try_feature(path_nodes[7])
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

-- graph_edges (0013) with the site of both ends: `up_site` / `down_site` are the site kinds of
-- feature ends ('resid', 'attn_z', 'mlp_out', 'transcoder'), NULL for other kinds. Columns
-- as in 0013, the two new ones last. graph_nodes.feature holds the stored (encoded) feature.
CREATE OR REPLACE VIEW graph_edges AS
SELECT *,
       CASE WHEN up_kind = 'feature' THEN fg_feature_site(up_feature) END AS up_site,
       CASE WHEN down_kind = 'feature' THEN fg_feature_site(down_feature) END AS down_site
FROM (
    SELECT l.run_id, l.prompt_id,
           s.kind AS up_kind, s.layer AS up_layer, s.feature AS up_feature, s.position AS up_position,
           s.token_id AS up_token_id,
           t.kind AS down_kind, t.layer AS down_layer, t.feature AS down_feature, t.position AS down_position,
           t.token_id AS down_token_id,
           l.weight
    FROM graph_links l
    JOIN graph_nodes s ON s.run_id = l.run_id AND s.prompt_id = l.prompt_id AND s.node_index = l.source_index
    JOIN graph_nodes t ON t.run_id = l.run_id AND t.prompt_id = l.prompt_id AND t.node_index = l.target_index
    UNION ALL
    SELECT e.run_id, e.prompt_id,
           'feature', e.up_layer, e.up_feature, CAST(NULL AS SMALLINT), CAST(NULL AS INTEGER),
           'feature', e.down_layer, e.down_feature, CAST(NULL AS SMALLINT), CAST(NULL AS INTEGER),
           CAST(e.weight AS DOUBLE)
    FROM edges e
    WHERE NOT EXISTS (SELECT 1 FROM graphs g WHERE g.run_id = e.run_id)
);
