-- featuregraph schema, step 1: the sweep's results.
-- Every table carries run_id. Sign convention everywhere: ablated minus clean.
-- Layers as in docs/method.md#sites-layers-and-feature-names: blocks.L.hook_resid_pre is layer L, blocks.L.hook_resid_post is L+1.

CREATE SEQUENCE run_id_seq START 1;

CREATE TABLE runs (
    run_id              INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'),
    -- sha256 over the run's semantic settings and its prompts: the same command resumes the same run
    run_key             VARCHAR NOT NULL UNIQUE,
    status              VARCHAR NOT NULL,          -- running | complete | failed
    model               VARCHAR NOT NULL,          -- hub name or local path as given
    model_source        VARCHAR NOT NULL,          -- hub | path
    model_sha256        VARCHAR,                   -- content hash of a local model folder's weights
    model_config        JSON NOT NULL,             -- n_layers, d_model, d_vocab, n_ctx, processing flags
    prompts_source      VARCHAR,                   -- file the prompts came from
    n_prompts           INTEGER NOT NULL,          -- prompts the run was asked to sweep
    coefficient         DOUBLE NOT NULL,
    edge_top_k          INTEGER NOT NULL,
    edge_floor          DOUBLE NOT NULL,
    logit_top_k         INTEGER NOT NULL,
    top_next_k          INTEGER NOT NULL,
    prepend_bos         BOOLEAN NOT NULL,
    read_position       INTEGER NOT NULL,          -- -1 = last token
    device              VARCHAR NOT NULL,
    dtype               VARCHAR NOT NULL,
    config              JSON NOT NULL,             -- the full run configuration, verbatim
    featuregraph_version VARCHAR NOT NULL,
    torch_version       VARCHAR NOT NULL,
    sae_lens_version    VARCHAR NOT NULL,
    transformer_lens_version VARCHAR NOT NULL,
    started_at          TIMESTAMP NOT NULL,
    finished_at         TIMESTAMP
);

-- One row per SAE of a run. site_kind keeps the door open for attention-output, MLP and transcoder sites.
CREATE TABLE run_saes (
    run_id          INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,
    site_kind       VARCHAR NOT NULL,              -- resid
    hook_name       VARCHAR NOT NULL,
    d_in            INTEGER NOT NULL,
    d_sae           INTEGER NOT NULL,
    architecture    VARCHAR NOT NULL,
    release         VARCHAR,                       -- sae_lens release, when loaded from one
    sae_id          VARCHAR,
    path            VARCHAR,                       -- local folder, when loaded from one
    sha256          VARCHAR NOT NULL,              -- hash of the weights as loaded
    neuronpedia_id  VARCHAR,
    config          JSON NOT NULL,                 -- the SAE's own cfg, verbatim
    PRIMARY KEY (run_id, layer)
);

CREATE TABLE prompts (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,              -- 0-based index in the run's prompt list
    text            VARCHAR NOT NULL,
    text_sha256     VARCHAR NOT NULL,
    tag             VARCHAR,
    metadata        JSON,
    n_tokens        SMALLINT NOT NULL,             -- including a prepended BOS
    n_ablations     INTEGER NOT NULL,
    ingested_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, prompt_id)
);

CREATE TABLE tokens (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    position        SMALLINT NOT NULL,
    token_id        INTEGER NOT NULL,
    token           VARCHAR NOT NULL
);

-- The clean pass's most likely next tokens at the read position.
CREATE TABLE top_next_tokens (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    rank            SMALLINT NOT NULL,             -- 1 = most likely
    token_id        INTEGER NOT NULL,
    prob            REAL NOT NULL,
    logp            REAL NOT NULL
);

-- Token strings of the run's tokenizer, so logit effects can be read without it.
CREATE TABLE vocab (
    run_id          INTEGER NOT NULL,
    token_id        INTEGER NOT NULL,
    token           VARCHAR NOT NULL
);

-- Sparse clean activations: the active features of each SAE at each position.
CREATE TABLE activations (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,
    position        SMALLINT NOT NULL,
    feature         INTEGER NOT NULL,
    activation      REAL NOT NULL
);

-- One row per ablation performed (a feature active at some ablated position).
CREATE TABLE ablations (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,
    feature         INTEGER NOT NULL,
    n_positions     SMALLINT NOT NULL,             -- ablated positions where the feature was active
    max_activation  REAL NOT NULL,                 -- over the ablated positions
    read_activation REAL NOT NULL                  -- at the read position (may be 0)
);

-- weight = act_down[ablated] - act_down[clean] at the read position.
-- Negative: ablating the upstream feature suppresses the downstream one.
CREATE TABLE edges (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    up_layer        SMALLINT NOT NULL,
    up_feature      INTEGER NOT NULL,
    down_layer      SMALLINT NOT NULL,
    down_feature    INTEGER NOT NULL,
    weight          REAL NOT NULL
);

-- dlogp = logp_ablated - logp_clean, dprob = p_ablated - p_clean, at the read position.
CREATE TABLE logit_effects (
    run_id          INTEGER NOT NULL,
    prompt_id       INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,
    feature         INTEGER NOT NULL,
    token_id        INTEGER NOT NULL,
    dlogp           REAL NOT NULL,
    dprob           REAL NOT NULL
);
