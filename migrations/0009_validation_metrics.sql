-- Path validation measures the answer, not only the distribution (issue #16): per prompt and arm, the
-- change of the answer's log-probability and of its logit difference to the best wrong token, which
-- features of the arm were inactive, and how the control was matched. Rows written before this
-- migration keep NULL in the new columns.

ALTER TABLE validation_results ADD COLUMN answer_dlogp REAL;          -- logp_ablated(answer) - logp_clean(answer)
ALTER TABLE validation_results ADD COLUMN wrong_token_id INTEGER;     -- the clean run's most likely non-answer token
ALTER TABLE validation_results ADD COLUMN logit_diff_clean REAL;      -- clean logit(answer) - logit(wrong token)
ALTER TABLE validation_results ADD COLUMN answer_dlogit_diff REAL;    -- ablated minus clean, same wrong token
ALTER TABLE validation_results ADD COLUMN inactive_features VARCHAR;  -- the arm's features inactive in the prompt, "L.F,L.F" ('' none)
ALTER TABLE validation_results ADD COLUMN activation_ratio REAL;      -- control rows: control's summed activation / path's
ALTER TABLE validation_results ADD COLUMN n_unmatched SMALLINT;       -- control rows: path features left without a control partner
