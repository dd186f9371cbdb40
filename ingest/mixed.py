"""The general sweep path for mixed SAE sites (docs/sweep.md#mixed-sites).

Residual-only runs whose edges go to the next site use the fast path of ingest/sweep.py (rank-1
residual updates, no hooks). Every other run comes here: an ablation is added at its site's own
hook through transformer_lens hooks, and the model's own block modules run from the site's block
to the end (on the suffix from the batch's first ablated position, over the clean prefix's cached
keys and values, as the fast path does; ingest/suffix.py fires the blocks' hook points), so what
each downstream SAE reads (z at its read position with block M's attention recomputed over the
ablated values, the MLP input of a transcoder, ...) is what the model computes.

An ablation of feature ``i`` with activation ``a_i`` at the positions ``P`` adds
``(c - 1) * a_i * W_dec[i]`` to the value its site writes:

- ``resid``: the residual stream (as the fast path);
- ``attn_z``: ``z`` of block L, ``W_dec[i]`` unflattened to ``[n_heads, d_head]`` the way
  sae_lens' hook_z SAEs do (``(n_heads d_head)``, head-major); through ``W_O`` this is
  ``(c - 1) * a_i * W_dec[i] @ W_O_cat`` added to the residual after block L's attention;
- ``mlp_out`` and ``transcoder``: block L's MLP output (``hook_mlp_out``).

Every reconstruction error stays in: only the ablation's own difference enters the model.
"""

from __future__ import annotations

from typing import Any

import torch

from featuregraph.ingest import cost
from featuregraph.ingest.sites import write_hook


def clean_forward(sweeper: Any, tokens: torch.Tensor) -> tuple[dict[int, torch.Tensor], list[torch.Tensor]]:
    """The clean residual entering every block (as ``Sweeper.clean_residuals``) and every
    site's input at every position, in its hook's shape, from one forward with capture hooks."""
    inputs: dict[int, torch.Tensor] = {}
    hooks = []
    for k, site in enumerate(sweeper.sites):

        def capture(act, hook, k=k):
            inputs[k] = act.detach().clone()

        hooks.append((site.hook_name, capture))
    with sweeper.model.hooks(fwd_hooks=hooks):
        resid = sweeper.clean_residuals(tokens)
    return resid, [inputs[k] for k in range(len(sweeper.sites))]


def ablation_delta(
    site: Any, features: torch.Tensor, removed: torch.Tensor, scale: float | torch.Tensor, n_heads: int
) -> torch.Tensor:
    """What rows ``features`` add at their site's write hook: ``scale * removed * W_dec[f]``,
    [batch, pos, d_out], or [batch, pos, n_heads, d_head] for hook_z."""
    if isinstance(scale, torch.Tensor):
        scale = scale[:, None, None]
    w = site.sae.W_dec[features]  # [batch, d_out]
    delta = scale * removed[:, :, None] * w[:, None, :]
    if site.site_kind == "attn_z":
        delta = delta.unflatten(-1, (n_heads, -1))
    return delta


def _site_hooks(sweeper: Any, k: int, delta: torch.Tensor, at: torch.Tensor, captured: dict) -> list:
    """transformer_lens hooks for one batch of site ``k``'s ablations: add ``delta`` [batch, s, ...]
    at the site's write hook (not for a residual site: the caller adds it to the stream), and
    capture each edge target's input at the read positions ``at`` (indices into s) in ``captured``.

    A hook seeing one position instead of s is in the model's last block, where a suffix run
    computes the read position only (ingest/suffix.py): there the read row is index 0.
    """
    s = delta.shape[1]
    rows = torch.arange(delta.shape[0], device=delta.device)

    def at_read(act: torch.Tensor) -> torch.Tensor:
        return act[rows, at] if act.shape[1] == s else act[:, 0]

    hooks = []
    site = sweeper.sites[k]
    if site.site_kind != "resid":

        def add(act, hook):
            d = delta if act.shape[1] == s else delta[rows, at][:, None]
            return act + d.to(act.dtype)

        hooks.append((write_hook(site), add))
    for t in sweeper.targets[k]:

        def capture(act, hook, t=t):
            captured[t] = at_read(act).clone()

        hooks.append((sweeper.sites[t].hook_name, capture))
    return hooks


def ablate_general(
    sweeper: Any,
    clean: Any,
    k: int,
    prompt_idx: torch.Tensor,
    features: torch.Tensor,
    removed: torch.Tensor,
    scale: float,
    start: int | None = None,
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """One batch of single-feature ablations at site ``k``, through hooks.

    ``start=None``: every position is recomputed by the model's own blocks (for block layouts
    ingest/suffix.py does not cover). Otherwise ``removed`` [batch, s] covers positions
    ``start..start+s-1`` only and the blocks run on that suffix over the clean prefix's cached
    keys and values, as the fast path does (docs/sweep.md#suffix-only-recompute).

    Returns ``{target site index: its activations at the read position [batch, d_sae]}`` for
    the site's edge targets, and the next-token log-probabilities [batch, d_vocab].
    """
    site, model = sweeper.sites[k], sweeper.model
    b = prompt_idx.shape[0]
    rows = torch.arange(b, device=sweeper.device)
    first = 0 if start is None else start
    at = clean.read[prompt_idx] - first
    delta = ablation_delta(site, features, removed, scale, int(model.cfg.n_heads))
    captured: dict[int, torch.Tensor] = {}
    x = clean.resid[site.layer][prompt_idx, first : first + removed.shape[1]]
    if site.site_kind == "resid":
        x = x + delta
    with model.hooks(fwd_hooks=_site_hooks(sweeper, k, delta, at, captured)):
        if start is None:
            x = sweeper._blocks(x, site.layer, sweeper.n_layers)
            sweeper.flops += b * cost.full_ablation_flops(sweeper.shape, site.layer, x.shape[1], None, 1)
        else:
            x, at = sweeper.suffix_blocks(clean, prompt_idx, x, start, at, site.layer, sweeper.n_layers)
    downs = {t: sweeper.sites[t].encode(captured[t]) for t in sweeper.targets[k]}
    sweeper.flops += sum(cost.encode_flops(sweeper.shape, b, sweeper.sites[t].d_sae) for t in downs)
    sweeper.flops += cost.unembed_flops(sweeper.shape, b)
    return downs, torch.log_softmax(sweeper._logits(x[rows, at]), -1)
