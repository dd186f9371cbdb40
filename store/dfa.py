"""Writing and reading direct feature attribution rows (tables ``dfa_features``, ``dfa_parts``;
migration 0015, docs/method.md#direct-feature-attribution)."""

from __future__ import annotations

from typing import Any, Mapping

from featuregraph.store.db import Database
from featuregraph.store.tables import arrow_table

DFA_TABLES = ("dfa_features", "dfa_parts")
DELETE_PROMPT = {t: f"DELETE FROM {t} WHERE run_id = ? AND prompt_id = ?" for t in DFA_TABLES}
# A run's prompts with their token ids in position order: exactly what the sweep saw.
RUN_PROMPT_TOKENS = """
SELECT prompt_id, list(token_id ORDER BY position) AS token_ids
FROM tokens WHERE run_id = ? GROUP BY prompt_id ORDER BY prompt_id
"""
# The run's SAE sites as stored (the hook names say which are attention-output SAEs).
RUN_SAE_HOOKS = "SELECT layer, hook_name FROM run_saes WHERE run_id = ? ORDER BY layer, hook_name"


def run_prompt_tokens(db: Database, run_id: int) -> list[tuple[int, list[int]]]:
    """``(prompt_id, token ids)`` of every stored prompt of run ``run_id``."""
    return [(int(p), [int(t) for t in ids]) for p, ids in db.fetchall(RUN_PROMPT_TOKENS, [run_id])]


def run_sae_hooks(db: Database, run_id: int) -> list[tuple[int, str]]:
    return [(int(layer), str(hook)) for layer, hook in db.fetchall(RUN_SAE_HOOKS, [run_id])]


def write_dfa(db: Database, run_id: int, by_prompt: Mapping[int, Mapping[str, Mapping[str, Any]]]) -> int:
    """Replace the DFA rows of each prompt of ``by_prompt`` (prompt id -> {table: columns}) in one
    transaction: a prompt computed again replaces its old rows, and nothing lands half-written.
    Returns the number of ``dfa_parts`` rows written."""
    written = 0
    with db.transaction():
        for prompt_id, tables in by_prompt.items():
            for name in DFA_TABLES:
                db.execute(DELETE_PROMPT[name], [run_id, prompt_id])
                db.insert_arrow(name, arrow_table(name, tables[name], run_id=run_id, prompt_id=prompt_id))
            written += len(tables["dfa_parts"]["value"])
    return written


__all__ = ["DFA_TABLES", "run_prompt_tokens", "run_sae_hooks", "write_dfa"]
