-- Calibrated cross-context noise (docs/experiments.md, "Cross-context noise").
--
-- A noise experiment now reads every position of each unrelated context (one sample per read
-- position at or after the ablated feature's first activation), keeps per feature the null of
-- the ablation's largest effect (noise_null), and edge_snr / logit_snr give every stored effect
-- a p-value against it. Older experiments keep their rows; they have no null, so their p-values
-- are NULL (run `featuregraph noise` again). Their per-feature edge_abs_* / dprob_abs_* columns
-- stay; new experiments leave them NULL and fill the columns below.

ALTER TABLE noise_features ADD COLUMN n_samples INTEGER;       -- samples in the feature's null (after thinning)
ALTER TABLE noise_features ADD COLUMN null_mode VARCHAR;       -- natural | injected | NULL (no sample)
ALTER TABLE noise_features ADD COLUMN edge_max_median REAL;    -- median over samples of max_j |w_j|
ALTER TABLE noise_features ADD COLUMN edge_max_p95 REAL;       -- its 95th percentile
ALTER TABLE noise_features ADD COLUMN logit_max_median REAL;   -- median over samples of max_t |dprob_t|
ALTER TABLE noise_features ADD COLUMN logit_max_p95 REAL;

-- The null of each baselined feature, one row per sample, sorted: value = the sample's largest
-- |effect| (kind 'edge': on any downstream feature; 'logit': |dprob| on any token), n_ge = how
-- many of the feature's samples are >= value. p(x) = (1 + n_ge of the smallest value >= x) / (1 + n_samples).
CREATE TABLE noise_null (
    run_id          INTEGER NOT NULL,
    experiment_id   INTEGER NOT NULL,
    layer           SMALLINT NOT NULL,
    feature         INTEGER NOT NULL,
    kind            VARCHAR NOT NULL,
    value           REAL NOT NULL,
    n_ge            INTEGER NOT NULL
);

DROP VIEW edge_snr;
DROP VIEW logit_snr;

-- The noise experiments a query reads: one given experiment, or (experiment NULL) the latest
-- complete noise experiment of each run. Never several per run at once.
CREATE MACRO noise_experiment_of(experiment) AS TABLE
SELECT run_id, experiment_id FROM (
    SELECT run_id, experiment_id,
           row_number() OVER (PARTITION BY run_id ORDER BY experiment_id DESC) AS newest
    FROM experiments WHERE kind = 'noise' AND status = 'complete'
)
WHERE CASE WHEN experiment IS NULL THEN newest = 1 ELSE experiment_id = experiment END;

-- Every stored edge against one noise experiment per run.
--   p_value     = (1 + #null samples >= |weight|) / (1 + n_samples); NULL without a null
--   z_score     = (weight - noise mean of this pair) / its std; NULL where the pair never varied
--   noise_ratio = |weight| / the 95th percentile of the feature's largest effect in noise
CREATE MACRO edge_snr_at(experiment) AS TABLE
WITH x AS (SELECT * FROM noise_experiment_of(experiment)),
e AS (SELECT e.*, x.experiment_id FROM edges e JOIN x USING (run_id)),
nn AS (SELECT * FROM noise_null WHERE kind = 'edge' AND experiment_id IN (SELECT experiment_id FROM x))
SELECT e.run_id, e.prompt_id, e.up_layer, e.up_feature, e.down_layer, e.down_feature, e.weight,
       e.experiment_id,
       nf.n_active AS noise_n_active, nf.n_samples AS noise_n, nf.null_mode,
       ne.mean AS noise_mean, ne.std AS noise_std, ne.abs_p95 AS noise_abs_p95,
       (e.weight - ne.mean) / nullif(ne.std, 0) AS z_score,
       abs(e.weight) / nullif(nf.edge_max_p95, 0) AS noise_ratio,
       CASE WHEN nf.n_samples > 0 THEN (1 + coalesce(nn.n_ge, 0)) / (1 + nf.n_samples) END AS p_value
FROM e
ASOF LEFT JOIN nn
  ON nn.experiment_id = e.experiment_id AND nn.layer = e.up_layer AND nn.feature = e.up_feature
 AND nn.value >= abs(e.weight)
LEFT JOIN noise_features nf
  ON nf.experiment_id = e.experiment_id AND nf.layer = e.up_layer AND nf.feature = e.up_feature
LEFT JOIN noise_edges ne
  ON ne.experiment_id = e.experiment_id AND ne.up_layer = e.up_layer AND ne.up_feature = e.up_feature
 AND ne.down_layer = e.down_layer AND ne.down_feature = e.down_feature;

-- Every stored logit effect against one noise experiment per run; p_value on |dprob|.
CREATE MACRO logit_snr_at(experiment) AS TABLE
WITH x AS (SELECT * FROM noise_experiment_of(experiment)),
l AS (SELECT l.*, x.experiment_id FROM logit_effects l JOIN x USING (run_id)),
nn AS (SELECT * FROM noise_null WHERE kind = 'logit' AND experiment_id IN (SELECT experiment_id FROM x))
SELECT l.run_id, l.prompt_id, l.layer, l.feature, l.token_id, l.dlogp, l.dprob,
       l.experiment_id,
       nf.n_active AS noise_n_active, nf.n_samples AS noise_n, nf.null_mode,
       nl.dprob_mean AS noise_dprob_mean, nl.dprob_std AS noise_dprob_std,
       (l.dprob - nl.dprob_mean) / nullif(nl.dprob_std, 0) AS z_score,
       abs(l.dprob) / nullif(nf.logit_max_p95, 0) AS noise_ratio,
       CASE WHEN nf.n_samples > 0 THEN (1 + coalesce(nn.n_ge, 0)) / (1 + nf.n_samples) END AS p_value
FROM l
ASOF LEFT JOIN nn
  ON nn.experiment_id = l.experiment_id AND nn.layer = l.layer AND nn.feature = l.feature
 AND nn.value >= abs(l.dprob)
LEFT JOIN noise_features nf
  ON nf.experiment_id = l.experiment_id AND nf.layer = l.layer AND nf.feature = l.feature
LEFT JOIN noise_logits nl
  ON nl.experiment_id = l.experiment_id AND nl.layer = l.layer AND nl.feature = l.feature
 AND nl.token_id = l.token_id;

-- The latest noise experiment of each run (one row per stored effect, never one per experiment).
CREATE VIEW edge_snr AS SELECT * FROM edge_snr_at(NULL);
CREATE VIEW logit_snr AS SELECT * FROM logit_snr_at(NULL);
