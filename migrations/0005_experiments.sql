-- Experiments on a run: cross-context noise baselines, path validation, response curves.
-- Each experiment is one row with its full specification; results carry experiment_id and run_id.
-- Sign convention as everywhere: ablated minus clean.

CREATE SEQUENCE experiment_id_seq START 1;

CREATE TABLE experiments (
    experiment_id       INTEGER PRIMARY KEY DEFAULT nextval('experiment_id_seq'),
    run_id              INTEGER NOT NULL,
    kind                VARCHAR NOT NULL,          -- noise | validation | curve
    status              VARCHAR NOT NULL,          -- running | complete | failed
    spec                JSON NOT NULL,             -- the experiment's settings, verbatim
    summary             JSON,                      -- headline figures, written when complete
    device              VARCHAR NOT NULL,
    featuregraph_version VARCHAR NOT NULL,
    torch_version       VARCHAR NOT NULL,
    started_at          TIMESTAMP NOT NULL,
    finished_at         TIMESTAMP
);

-- The unrelated contexts a noise experiment ablated features in.
CREATE TABLE noise_contexts (
    run_id          INTEGER NOT NULL,
    experiment_id   INTEGER NOT NULL,
    context_id      INTEGER NOT NULL,
    text            VARCHAR NOT NULL,
    n_tokens        SMALLINT NOT NULL
);

-- Per feature: how often it is active in the contexts, and the size of what ablating it does there.
-- edge_abs_*: over the top-k |weight| of each noise ablation (k = the run's edge_top_k);
-- dprob_abs_*: over the top-k promoted and suppressed |dprob| of each noise ablation.
CREATE TABLE noise_features (
    run_id          INTEGER NOT NULL,
    experiment_id   INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,
    feature         INTEGER NOT NULL,
    n_contexts      INTEGER NOT NULL,
    n_active        INTEGER NOT NULL,
    edge_abs_mean   REAL,
    edge_abs_std    REAL,
    edge_abs_p95    REAL,
    dprob_abs_mean  REAL,
    dprob_abs_std   REAL,
    dprob_abs_p95   REAL
);

-- Per edge of the run whose upstream feature was ablated in the noise contexts: the distribution of
-- its weight over all n contexts (0 where the upstream feature is inactive).
-- z_scale = max(std, the run's edge_floor): what a z-score divides by.
CREATE TABLE noise_edges (
    run_id          INTEGER NOT NULL,
    experiment_id   INTEGER NOT NULL,
    up_layer        SMALLINT NOT NULL,
    up_feature      INTEGER NOT NULL,
    down_layer      SMALLINT NOT NULL,
    down_feature    INTEGER NOT NULL,
    n               INTEGER NOT NULL,
    n_active        INTEGER NOT NULL,
    mean            REAL NOT NULL,
    std             REAL NOT NULL,
    abs_p95         REAL NOT NULL,
    z_scale         REAL NOT NULL
);

-- Per (feature, token) of the run's logit effects: the distribution of dprob and dlogp in the contexts.
CREATE TABLE noise_logits (
    run_id          INTEGER NOT NULL,
    experiment_id   INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,
    feature         INTEGER NOT NULL,
    token_id        INTEGER NOT NULL,
    n               INTEGER NOT NULL,
    n_active        INTEGER NOT NULL,
    dprob_mean      REAL NOT NULL,
    dprob_std       REAL NOT NULL,
    dprob_abs_p95   REAL NOT NULL,
    dlogp_mean      REAL NOT NULL,
    dlogp_std       REAL NOT NULL,
    z_scale         REAL NOT NULL
);

-- Path validation: per prompt and arm (path | control), what the joint ablation did.
CREATE TABLE validation_results (
    run_id          INTEGER NOT NULL,
    experiment_id   INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    text            VARCHAR NOT NULL,
    arm             VARCHAR NOT NULL,              -- path | control
    features        VARCHAR NOT NULL,              -- the features ablated, as "L.F,L.F"
    total_variation REAL NOT NULL,                 -- 0.5 * sum |dprob| over the vocabulary
    answer_token_id INTEGER,                       -- when the prompt names an expected answer
    answer_dprob    REAL,
    answer_dprob_frac REAL                         -- answer_dprob / p_clean(answer)
);

-- Path validation: the tokens behind each result row.
CREATE TABLE validation_tokens (
    run_id          INTEGER NOT NULL,
    experiment_id   INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    arm             VARCHAR NOT NULL,              -- clean | path | control
    kind            VARCHAR NOT NULL,              -- top (clean top next tokens) | promoted | suppressed
    rank            SMALLINT NOT NULL,
    token_id        INTEGER NOT NULL,
    p_clean         REAL NOT NULL,
    p_ablated       REAL NOT NULL,
    dprob           REAL NOT NULL,
    dprob_frac      REAL                           -- dprob / p_clean
);

-- Response curves: a downstream feature's activation and chosen tokens' probabilities as the
-- upstream feature's coefficient c varies (c = 1: clean; 0: zero-ablated).
CREATE TABLE curve_points (
    run_id          INTEGER NOT NULL,
    experiment_id   INTEGER NOT NULL,
    coefficient     DOUBLE NOT NULL,
    down_activation REAL,
    token_id        INTEGER NOT NULL,
    logp            REAL NOT NULL,
    prob            REAL NOT NULL
);

-- Signal against noise, per stored edge and per complete noise experiment of its run.
CREATE VIEW edge_snr AS
SELECT e.run_id, e.prompt_id, e.up_layer, e.up_feature, e.down_layer, e.down_feature, e.weight,
       x.experiment_id,
       ne.n AS noise_n, ne.mean AS noise_mean, ne.std AS noise_std, ne.abs_p95 AS noise_abs_p95,
       (e.weight - ne.mean) / ne.z_scale AS z_score,
       abs(e.weight) / nullif(coalesce(ne.abs_p95, nf.edge_abs_p95), 0) AS noise_ratio
FROM edges e
JOIN experiments x ON x.run_id = e.run_id AND x.kind = 'noise' AND x.status = 'complete'
LEFT JOIN noise_edges ne
  ON ne.experiment_id = x.experiment_id AND ne.up_layer = e.up_layer AND ne.up_feature = e.up_feature
 AND ne.down_layer = e.down_layer AND ne.down_feature = e.down_feature
LEFT JOIN noise_features nf
  ON nf.experiment_id = x.experiment_id AND nf.layer = e.up_layer AND nf.feature = e.up_feature;

CREATE VIEW logit_snr AS
SELECT l.run_id, l.prompt_id, l.layer, l.feature, l.token_id, l.dlogp, l.dprob,
       x.experiment_id,
       nl.n AS noise_n, nl.dprob_mean AS noise_dprob_mean, nl.dprob_std AS noise_dprob_std,
       (l.dprob - nl.dprob_mean) / nl.z_scale AS z_score,
       abs(l.dprob) / nullif(coalesce(nl.dprob_abs_p95, nf.dprob_abs_p95), 0) AS noise_ratio
FROM logit_effects l
JOIN experiments x ON x.run_id = l.run_id AND x.kind = 'noise' AND x.status = 'complete'
LEFT JOIN noise_logits nl
  ON nl.experiment_id = x.experiment_id AND nl.layer = l.layer AND nl.feature = l.feature AND nl.token_id = l.token_id
LEFT JOIN noise_features nf
  ON nf.experiment_id = x.experiment_id AND nf.layer = l.layer AND nf.feature = l.feature;
