"""A plain, obviously-right reference for the sweep: one full forward per ablated feature.

Slow by design (batch size 1, the whole model every time, hooks from transformer_lens);
tests and benchmarks compare :class:`ingest.sweep.Sweeper` against it. Results are dense:
every downstream feature and every vocabulary token, nothing pruned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from featuregraph.ingest.loading import SaeSite


@dataclass
class ReferenceAblation:
    """Dense effects of ablating one feature; ``weights`` is None at the last site."""

    weights: torch.Tensor | None  # [d_sae of the next site]: act ablated - act clean
    dlogp: torch.Tensor  # [d_vocab]
    dprob: torch.Tensor  # [d_vocab]


@torch.no_grad()
def reference_sweep(
    model, sites: list[SaeSite], token_ids: list[int], coefficient: float, prepend_bos: bool
) -> dict[tuple[int, int], ReferenceAblation]:
    """``{(layer, feature): effects}`` for every feature active at an ablated position.

    Reads at the last token; ablates every position except a prepended BOS.
    """
    tokens = torch.tensor([token_ids], device=next(model.parameters()).device)
    read = len(token_ids) - 1
    first = 1 if prepend_bos else 0
    clean_logits, cache = model.run_with_cache(tokens, names_filter=[s.hook_name for s in sites])
    clean_logp = torch.log_softmax(clean_logits[0, read].float(), -1)
    clean_acts = [s.sae.encode(cache[s.hook_name][0]) for s in sites]

    out: dict[tuple[int, int], ReferenceAblation] = {}
    for k, site in enumerate(sites):
        nxt = sites[k + 1] if k + 1 < len(sites) else None
        for feature in range(site.d_sae):
            if not bool((clean_acts[k][first:, feature] != 0).any()):
                continue

            def ablate(x, hook, site=site, feature=feature):
                a = site.sae.encode(x)[..., feature].clone()
                a[:, :first] = 0.0
                return x + (coefficient - 1.0) * a[..., None] * site.sae.W_dec[feature]

            captured: dict[str, torch.Tensor] = {}

            def capture(x, hook):
                captured["x"] = x.clone()

            hooks = [(site.hook_name, ablate)]
            if nxt is not None:
                hooks.append((nxt.hook_name, capture))
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
            logp = torch.log_softmax(logits[0, read].float(), -1)
            weights = None
            if nxt is not None:
                weights = nxt.sae.encode(captured["x"][0, read]) - clean_acts[k + 1][read]
            out[(site.layer, feature)] = ReferenceAblation(weights, logp - clean_logp, logp.exp() - clean_logp.exp())
    return out


@torch.no_grad()
def reference_joint_ablation(
    model, sites: list[SaeSite], token_ids: list[int], features: list[tuple[int, int]], coefficient: float, prepend_bos: bool
) -> torch.Tensor:
    """Next-token log-probabilities [d_vocab] at the last token with every ``(layer, feature)``
    of ``features`` ablated at once: one hook per site, each encoding the residual it sees."""
    tokens = torch.tensor([token_ids], device=next(model.parameters()).device)
    first = 1 if prepend_bos else 0
    read = len(token_ids) - 1
    hooks = []
    for site in sites:
        feats = [f for layer, f in features if layer == site.layer]
        if not feats:
            continue

        def ablate(x, hook, site=site, feats=feats):
            a = site.sae.encode(x)[..., feats].clone()  # [1, pos, n]
            a[:, :first] = 0.0
            if site.layer == model.cfg.n_layers:  # after the last block only the read position matters
                keep = a[:, read].clone()
                a.zero_()
                a[:, read] = keep
            return x + (coefficient - 1.0) * a @ site.sae.W_dec[feats]

        hooks.append((site.hook_name, ablate))
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    return torch.log_softmax(logits[0, read].float(), -1)
