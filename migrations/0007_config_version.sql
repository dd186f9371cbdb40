-- featuregraph schema, step 7: a run's settings are stored once, in its versioned `config`.
--
-- Until now the sweep settings were stored twice: as flat columns of `runs` and inside the
-- `config` JSON. From here on `config` (with `config_version`, the layout it was written in)
-- is the only copy; the flat columns stay, as generated columns read out of it, so SQL keeps
-- reading `runs.edge_top_k` and friends but nothing can write them apart from `config`.
-- store/run_config.py upgrades an older layout to the current one when Python reads it back.
-- Every layout keeps these paths ($.sweep.*, $.dtype); a layout that moves one changes the
-- expressions below in a new migration.
--
-- Rows written before this step: their flat values are folded into their config (for real
-- runs they equal what it held already) and they get config_version 1.
-- `prepend_bos` (resolved from the SAEs when the config says null) and `device` (where the run
-- actually ran, updated on resume) are outcomes, not settings: they stay stored columns.

CREATE TABLE __runs_before_0007 AS SELECT * FROM runs;
DROP TABLE runs;

CREATE TABLE runs (
    run_id              INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'),
    run_key             VARCHAR NOT NULL UNIQUE,
    status              VARCHAR NOT NULL,          -- running | complete | failed
    model               VARCHAR NOT NULL,
    model_source        VARCHAR NOT NULL,
    model_sha256        VARCHAR,
    model_config        JSON NOT NULL,
    prompts_source      VARCHAR,
    n_prompts           INTEGER NOT NULL,
    coefficient         DOUBLE  GENERATED ALWAYS AS (CAST(json_extract(config, '$.sweep.coefficient') AS DOUBLE)),
    edge_top_k          INTEGER GENERATED ALWAYS AS (CAST(json_extract(config, '$.sweep.edge_top_k') AS INTEGER)),
    edge_floor          DOUBLE  GENERATED ALWAYS AS (CAST(json_extract(config, '$.sweep.edge_floor') AS DOUBLE)),
    logit_top_k         INTEGER GENERATED ALWAYS AS (CAST(json_extract(config, '$.sweep.logit_top_k') AS INTEGER)),
    top_next_k          INTEGER GENERATED ALWAYS AS (CAST(json_extract(config, '$.sweep.top_next_k') AS INTEGER)),
    prepend_bos         BOOLEAN NOT NULL,          -- as resolved for the run
    read_position       INTEGER GENERATED ALWAYS AS (CAST(json_extract(config, '$.sweep.read_position') AS INTEGER)),
    device              VARCHAR NOT NULL,          -- where it ran (last)
    dtype               VARCHAR GENERATED ALWAYS AS (json_extract_string(config, '$.dtype')),
    config              JSON NOT NULL,             -- the run's settings, in layout config_version
    config_version      INTEGER NOT NULL,
    featuregraph_version VARCHAR NOT NULL,
    torch_version       VARCHAR NOT NULL,
    sae_lens_version    VARCHAR NOT NULL,
    transformer_lens_version VARCHAR NOT NULL,
    started_at          TIMESTAMP NOT NULL,
    finished_at         TIMESTAMP
);

INSERT INTO runs (
    run_id, run_key, status, model, model_source, model_sha256, model_config, prompts_source,
    n_prompts, prepend_bos, device, config, config_version, featuregraph_version, torch_version,
    sae_lens_version, transformer_lens_version, started_at, finished_at
)
SELECT run_id, run_key, status, model, model_source, model_sha256, model_config, prompts_source,
       n_prompts, prepend_bos, device,
       json_merge_patch(
           config,
           json_object(
               'sweep', json_object(
                   'coefficient', coefficient, 'edge_top_k', edge_top_k, 'edge_floor', edge_floor,
                   'logit_top_k', logit_top_k, 'top_next_k', top_next_k, 'read_position', read_position
               ),
               'dtype', dtype
           )
       ),
       1,
       featuregraph_version, torch_version, sae_lens_version, transformer_lens_version, started_at,
       finished_at
FROM __runs_before_0007
ORDER BY run_id;

DROP TABLE __runs_before_0007;
