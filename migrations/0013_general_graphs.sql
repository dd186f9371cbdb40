-- featuregraph schema, step 13: general graphs (docs/graphs.md).
--
-- A prompt's graph in any method's terms: nodes of every kind (features of any dictionary kind,
-- embeddings, reconstruction errors, logits) with positions, and links between any two nodes
-- (any two layers, a position on both ends). Imported Neuronpedia / circuit-tracer graph files
-- land here verbatim; their feature -> feature projection (positions summed) also lands in
-- `edges` through the ingest's write path, so every existing query reads them too.
-- Nothing existing changes: older databases only gain the empty tables and the view.

-- One row per stored graph (one prompt of a run): where it came from and how it was pruned.
CREATE TABLE graphs (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    method          VARCHAR NOT NULL,              -- imported:<generator> for imported files
    scan            VARCHAR NOT NULL,              -- the model id the file names (metadata.scan)
    slug            VARCHAR NOT NULL,
    prompt          VARCHAR NOT NULL,
    prompt_tokens   VARCHAR[] NOT NULL,
    schema_version  INTEGER,                       -- metadata.schema_version (1: Cantor feature ids)
    node_threshold  DOUBLE,                        -- pruning_settings (or metadata.node_threshold)
    edge_threshold  DOUBLE,
    source_file     VARCHAR,
    content_sha256  VARCHAR NOT NULL,              -- of the file's bytes: a file imports once
    document        JSON NOT NULL,                 -- metadata, qParams and any other top-level key, verbatim
    imported_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, prompt_id)
);

-- Nodes, in the file's order (node_index). kind: feature | embedding | error | logit | bias | other.
-- layer: the file's layer as a number (NULL for "E" and other non-numeric layers; layer_label
-- keeps the text). feature: the dictionary unit (Cantor or layer-offset ids decoded);
-- raw_feature: the id as the file wrote it.
CREATE TABLE graph_nodes (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    node_index      INTEGER NOT NULL,
    node_id         VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,
    feature_type    VARCHAR NOT NULL,              -- verbatim: "cross layer transcoder", "embedding", ...
    layer           SMALLINT,
    layer_label     VARCHAR NOT NULL,
    position        SMALLINT,                      -- ctx_idx
    feature         INTEGER,
    raw_feature     BIGINT,
    token_id        INTEGER,                       -- logit and embedding nodes
    activation      DOUBLE,
    influence       DOUBLE,
    token_prob      DOUBLE,
    is_target_logit BOOLEAN,
    clerp           VARCHAR,
    js_node_id      VARCHAR NOT NULL,
    extra           JSON                           -- any other field of the node, verbatim
);

-- Links between nodes. weight = -(the file's weight): featuregraph's sign convention is
-- "ablated minus clean", and a graph file's link is positive when the source promotes the target.
CREATE TABLE graph_links (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    source_index    INTEGER NOT NULL,
    target_index    INTEGER NOT NULL,
    weight          DOUBLE NOT NULL
);

-- Every edge in general form: imported links with both ends resolved, and the exact sweep's
-- edges (features summed over positions: no position, kind feature) of runs with no graphs.
CREATE VIEW graph_edges AS
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
WHERE NOT EXISTS (SELECT 1 FROM graphs g WHERE g.run_id = e.run_id);
