"""A hand-built run with SAEs at several sites (residual, attention output, MLP output), written
through the store's own writers without torch, for the site-aware naming tests.

Sites: res 0 (blocks.0.hook_resid_pre), att 0 (blocks.0.attn.hook_z), mlp 0
(blocks.0.hook_mlp_out), res 1 (blocks.1.hook_resid_pre); 10 features each. Every site has a
feature of index 5, so a residual and an attention feature share (layer 0, index 5):

    prompt 0 (tag a): 0.5 -> 0.att.5 +0.5, 0.att.5 -> 1.5 -0.4, 0.5 -> 0.mlp.5 +0.3, 0.mlp.5 -> 1.5 +0.2
    prompt 1 (tag a): 0.5 -> 0.att.5 +0.6, 0.att.5 -> 1.5 -0.3, 0.5 -> 0.mlp.5 +0.1
    prompt 2 (tag b): 0.5 -> 0.att.5 +0.25, 0.att.5 -> 1.5 -0.125, 0.att.5 -> 0.mlp.5 +0.75, 0.mlp.5 -> 1.5 +0.375

Activations at position 1 (peak): 0.5 is 1.0 in every prompt; 0.att.5 is 2.0, 3.0, 4.0 in
prompts 0, 1, 2 (so its top context is prompt 2, the residual feature's prompt 0). Logit
effects: ablating 0.5 changes token 1 by dprob +0.1 in prompt 0; ablating 0.att.5 changes
token 2 by dprob -0.2 in prompt 1.
"""

from __future__ import annotations

from pathlib import Path

from helpers import make_run
from query_graphs import VOCAB, prompt_result

from featuregraph.store.db import open_database
from featuregraph.store.runs import create_run, finish_run, write_prompt_results

LIMIT = 2**28  # written out: the tests do not borrow the encoding from the code under test
RES5, ATT5, MLP5 = 5, LIMIT + 5, 2 * LIMIT + 5

SAES = [  # (layer, site_kind, hook, neuronpedia id)
    (0, "resid", "blocks.0.hook_resid_pre", "gpt2-small/0-res-jb"),
    (0, "attn_z", "blocks.0.attn.hook_z", "gpt2-small/0-att-kk"),
    (0, "mlp_out", "blocks.0.hook_mlp_out", None),
    (1, "resid", "blocks.1.hook_resid_pre", "gpt2-small/1-res-jb"),
]

MIXED_GRAPH = {
    0: ("a", [(0, RES5, 0, ATT5, 0.5), (0, ATT5, 1, RES5, -0.4), (0, RES5, 0, MLP5, 0.3), (0, MLP5, 1, RES5, 0.2)]),
    1: ("a", [(0, RES5, 0, ATT5, 0.6), (0, ATT5, 1, RES5, -0.3), (0, RES5, 0, MLP5, 0.1)]),
    2: ("b", [(0, RES5, 0, ATT5, 0.25), (0, ATT5, 1, RES5, -0.125), (0, ATT5, 0, MLP5, 0.75),
              (0, MLP5, 1, RES5, 0.375)]),
}  # fmt: skip
ATT_PEAKS = {0: 2.0, 1: 3.0, 2: 4.0}


def sae_rows() -> list[dict]:
    return [
        {"layer": layer, "site_kind": site, "hook_name": hook, "d_in": 4, "d_sae": 10, "architecture": "standard",
         "release": None, "sae_id": None, "path": None, "sha256": f"{site}{layer}", "neuronpedia_id": np_id,
         "config": {}}
        for layer, site, hook, np_id in SAES
    ]  # fmt: skip


def mixed_database(path: Path | str) -> Path:
    """A database holding MIXED_GRAPH as run 1."""
    with open_database(path) as db:
        run = create_run(db, "mixed", make_run(), sae_rows(), VOCAB)
        results = []
        for prompt, (tag, edges) in MIXED_GRAPH.items():
            acts = [(0, 1, RES5, 1.0), (0, 1, ATT5, ATT_PEAKS[prompt])]
            logits = (
                [(0, RES5, 1, 0.2, 0.1)] if prompt == 0 else [(0, ATT5, 2, -0.4, -0.2)] if prompt == 1 else []
            )
            results.append(prompt_result(prompt, edges, tag, activations=acts, logits=logits))
        write_prompt_results(db, run, results)
        finish_run(db, run, "complete")
    return Path(path)
