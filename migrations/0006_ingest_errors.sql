-- featuregraph schema, step 6: bulk ingest.
--
-- Prompts may carry a user-supplied id and a list of tags (besides the single `tag` and the
-- `metadata` JSON they had already): both come from the prompt file's `id` and `tags` fields.
ALTER TABLE prompts ADD COLUMN external_id VARCHAR;
ALTER TABLE prompts ADD COLUMN tags VARCHAR[];

-- Prompts of a run that were not swept, and why (ingest with --bad-prompts record, the
-- default of distributed ingest; duplicates are skipped and listed here under either policy).
-- prompt_index is the position the prompt would have had as prompt_id: the index of the
-- record in the input (blank .txt/.jsonl lines are not records), so prompt ids keep a gap.
--   reason: empty | too_long | no_tokens | undecodable | invalid_record | duplicate
CREATE TABLE ingest_errors (
    run_id          INTEGER NOT NULL,
    prompt_index    INTEGER NOT NULL,
    external_id     VARCHAR,                       -- the record's `id`, when it had one
    source_line     INTEGER,                       -- 1-based line (row, for Parquet and datasets)
    reason          VARCHAR NOT NULL,
    detail          VARCHAR NOT NULL,              -- one line, as --bad-prompts error would stop with
    excerpt         VARCHAR,                       -- the start of the text (undecodable bytes escaped)
    PRIMARY KEY (run_id, prompt_index)
);
