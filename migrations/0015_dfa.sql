-- featuregraph schema, step 15: direct feature attribution of attention-output SAE features
-- (docs/method.md#direct-feature-attribution, `featuregraph dfa`).
--
-- Nothing existing changes: older databases only gain the two empty tables.
-- `feature` is stored encoded as every other table stores it (attn_z: 2^28 + the SAE unit).

-- One row per (prompt, attention feature) decomposed: its activation and pre-activation at the
-- read position, and the residual layer whose SAE the recursion used (NULL: none).
CREATE TABLE dfa_features (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,             -- the attention block L (blocks.L.attn.hook_z)
    feature         INTEGER NOT NULL,
    position        SMALLINT NOT NULL,             -- the read position t
    activation      FLOAT NOT NULL,
    pre_activation  DOUBLE NOT NULL,
    resid_layer     SMALLINT
);

-- The parts. method 'dfa': term 'head_source' (head, source_position: A[h,t,s] <v_h(s), W_enc[h-block, i]>,
-- the top-k by |value|), 'rest' (the other head-source parts summed), 'encoder_bias', 'decoder_bias';
-- per (prompt, feature) they sum to pre_activation.
-- method 'dfa_resid': one head-source part split over the residual SAE at the source: term 'feature'
-- (up_layer, up_feature: the top residual features), 'rest', 'error', 'decoder_bias', 'bias' (ln1's
-- bias and the value bias); per (prompt, feature, head, source_position) they sum to that part.
-- Values are contributions (ablated minus clean is minus the value).
CREATE TABLE dfa_parts (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,
    feature         INTEGER NOT NULL,
    method          VARCHAR NOT NULL,
    term            VARCHAR NOT NULL,
    head            SMALLINT,
    source_position SMALLINT,
    up_layer        SMALLINT,
    up_feature      INTEGER,
    value           DOUBLE NOT NULL
);
