"""The batched SAE ablation sweep (docs/method.md#one-ablation, #edges, #logit-effects; docs/sweep.md).

For one prompt, every SAE feature active at an ablated position is ablated in turn:
``x <- x + (c - 1) * a_i * W_dec[i]`` at each ablated position of its site, where ``a`` is
the SAE's own ``encode`` of the clean residual. The SAE's reconstruction error never enters
the model; only the ablation's own effect does. We record, at the read position:

- edges into the next SAE site: ``act_down[ablated] - act_down[clean]``;
- logit effects: ``logp_ablated - logp_clean`` and ``p_ablated - p_clean``.

Why it is fast (docs/method.md#cost-model, docs/sweep.md#suffix-only-recompute): the clean
residual at every site is computed once and reused, so an ablation at layer L only runs blocks
L.. onward, and only from the feature's first active position on (the prefix's clean keys and
values are cached; ingest/suffix.py); ablations sorted by first position share one forward as
a batch of rank-1 updates; results stay on the device and are copied to the host once per
group of prompts. ``Sweeper.flops`` counts the floating-point work done (ingest/cost.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from featuregraph.errors import InputError
from featuregraph.ingest import cost, mixed
from featuregraph.ingest.columns import device_columns, prompt_results
from featuregraph.ingest.config import SweepConfig
from featuregraph.ingest.grouping import MAX_PADDING, SuffixBatch, plan_batches
from featuregraph.ingest.loading import SaeSite
from featuregraph.ingest.sites import edge_targets
from featuregraph.ingest.suffix import BlockWeights, block_suffix, qkv, supports_suffix
from featuregraph.store.models import PromptResult


@dataclass(frozen=True)
class PromptInput:
    """A tokenized prompt: ``token_ids`` include the prepended BOS when there is one;
    ``tokens`` are their strings (default: the ids written out)."""

    prompt_id: int
    text: str
    token_ids: list[int]
    tokens: list[str] | None = None
    tag: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class CleanPass:
    """A group of prompts' clean forward pass (right-padded to ``pos`` positions).

    ``resid[L]`` is the residual [prompts, pos, d_model] entering block L; ``read`` the
    read position per prompt; ``logp`` the next-token log-probabilities there
    [prompts, d_vocab]; ``read_acts[k]`` site k's SAE activations there [prompts, d_sae].
    """

    lengths: list[int]
    read: torch.Tensor
    resid: dict[int, torch.Tensor]
    logp: torch.Tensor
    read_acts: list[torch.Tensor]
    ablate_mask: torch.Tensor  # [prompts, pos]: positions an ablation changes
    read_mask: torch.Tensor  # [prompts, pos]: the read position only
    real_mask: torch.Tensor  # [prompts, pos]: not padding
    kv: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # clean keys/values per block (suffix reuse)
    q: dict[int, torch.Tensor] | None = None  # clean queries per block (suffix reuse, the ablated block)
    inputs: list[torch.Tensor] | None = None  # general path: each site's clean input at every position


class Sweeper:
    """Runs the sweep for one model and its SAE sites (in forward order, ingest/sites.py).

    Residual-only runs whose edges go to the next site take the fast path below; any other
    run (attention, MLP or transcoder sites, or another ``edge_target``) the general path of
    ingest/mixed.py (``general`` is True), same definitions (docs/sweep.md#mixed-sites).

    ``suffix_reuse`` (default on) recomputes an ablation only from its feature's first active
    position, over the clean prefix's cached keys and values; off, every position is
    recomputed (the A/B baseline). Both give the same numbers up to float rounding. It is
    silently off for block layouts ingest/suffix.py does not reproduce (see ``supports_suffix``).
    """

    def __init__(
        self, model: Any, sites: list[SaeSite], config: SweepConfig, prepend_bos: bool, suffix_reuse: bool = True
    ):
        if not sites:
            raise InputError("the sweep needs at least one SAE")
        self.model = model
        self.sites = sites
        self.config = config
        self.prepend_bos = prepend_bos
        self.n_layers = int(model.cfg.n_layers)
        self.device = next(model.parameters()).device
        self.targets = edge_targets(sites, config.edge_target)  # per site: the sites its edges go to
        nexts = [[k + 1] if k + 1 < len(sites) else [] for k in range(len(sites))]
        self.general = any(s.site_kind != "resid" for s in sites) or self.targets != nexts
        self.suffix_reuse = suffix_reuse and supports_suffix(model.cfg)
        self.weights = [BlockWeights.of(b) for b in model.blocks] if self.suffix_reuse else []
        # batch grouping (ingest/grouping.py): on a GPU a launch costs more than padding (the 2% rule
        # took the demo from 120 to 10 prompts/s on an H200: hundreds of tiny batches), so full batches
        self.max_padding = MAX_PADDING if self.device.type == "cpu" else 1.0
        self._unembed_t: torch.Tensor | None = None
        self.shape = cost.Shape.of(model.cfg)
        self.flops = 0  # floating-point operations of the matrix products run so far (cost model)
        self.delta: Any = None  # low-precision delta mode (ingest/delta.py ``with_delta``), else None

    # -- pieces of the forward pass -------------------------------------------------

    def _blocks(self, resid: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run transformer blocks ``start..stop-1`` on a residual stream [batch, pos, d_model]."""
        for block in self.model.blocks[start:stop]:
            resid = block(resid)
        return resid

    def _logits(self, resid_read: torch.Tensor) -> torch.Tensor:
        """Next-token logits from the final residual at the read position, [batch, d_vocab], float32."""
        x = resid_read[:, None, :]
        if self.model.cfg.normalization_type is not None:
            x = self.model.ln_final(x)
        if self._unembed_t is None:  # [d_vocab, d_model] once: the module's addmm transposed W_U on every call
            self._unembed_t = self.model.unembed.W_U.T.contiguous()
        logits = torch.nn.functional.linear(x[:, 0, :], self._unembed_t, self.model.unembed.b_U).float()
        cap = getattr(self.model.cfg, "output_logits_soft_cap", -1.0) or -1.0
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def clean_residuals(self, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
        """Clean residual stream [prompts, pos, d_model] at every layer 0..n_layers (input of block L)."""
        resid = self.model(tokens, stop_at_layer=0)
        out = {0: resid}
        for layer in range(self.n_layers):
            resid = self.model.blocks[layer](resid)
            out[layer + 1] = resid
        return out

    def positions(self, n_tokens: int) -> tuple[int, int]:
        """``(first_ablated, read)``: ablate positions first..read, read at ``read``.

        A prepended BOS is never ablated; positions after the read position cannot
        affect it (causal attention), so they are never ablated either.
        """
        read = self.config.read_position
        read = n_tokens - 1 if read == -1 else read
        if read >= n_tokens:
            raise InputError(f"read position {read} is past the prompt's {n_tokens} tokens")
        first = 1 if self.prepend_bos else 0
        if first > read:
            raise InputError("prompt has no token to ablate (only the BOS token)")
        return first, read

    # -- the sweep ------------------------------------------------------------------

    @torch.no_grad()
    def clean_pass(self, prompts: list[PromptInput]) -> "CleanPass":
        """The clean forward pass of a group of prompts, right-padded to a common length.

        Causal attention means real positions never see the padding, so every number a
        prompt gets here is the one it would get alone.
        """
        dev = self.device
        lengths = [len(p.token_ids) for p in prompts]
        bounds = [self.positions(n) for n in lengths]
        n_pos = max(lengths)
        tokens = torch.zeros(len(prompts), n_pos, dtype=torch.long)
        for i, p in enumerate(prompts):
            tokens[i, : lengths[i]] = torch.tensor(p.token_ids)
        first = torch.tensor([b[0] for b in bounds], device=dev)
        read = torch.tensor([b[1] for b in bounds], device=dev)
        rows = torch.arange(len(prompts), device=dev)
        inputs = None
        if self.general:
            resid, inputs = mixed.clean_forward(self, tokens.to(dev))
        else:
            resid = self.clean_residuals(tokens.to(dev))
        logp = torch.log_softmax(self._logits(resid[self.n_layers][rows, read]), -1)
        pos = torch.arange(n_pos, device=dev)[None]
        kv = qs = None
        if self.suffix_reuse:
            cached = {L: qkv(self.model.blocks[L], self.weights[L], resid[L]) for L in range(self.n_layers)}
            kv, qs = {L: t[1:] for L, t in cached.items()}, {L: t[0] for L, t in cached.items()}
        sh, n = self.shape, len(prompts)
        self.flops += cost.clean_flops(sh, n, n_pos, [s.d_sae for s in self.sites], kv is not None)
        return CleanPass(
            lengths=lengths,
            read=read,
            resid=resid,
            logp=logp,
            # Downstream activations are only ever read at the read position.
            read_acts=[
                site.encode((inputs[k] if inputs is not None else resid[site.layer])[rows, read])
                for k, site in enumerate(self.sites)
            ],
            ablate_mask=(pos >= first[:, None]) & (pos <= read[:, None]),
            read_mask=pos == read[:, None],
            real_mask=pos < torch.tensor(lengths, device=dev)[:, None],
            kv=kv,
            q=qs,
            inputs=inputs,
        )

    def site_acts(self, clean: "CleanPass", k: int) -> torch.Tensor:
        """Site ``k``'s clean SAE activations at every position [prompts, pos, d_sae]."""
        site = self.sites[k]
        return site.encode(clean.inputs[k] if clean.inputs is not None else clean.resid[site.layer])

    def writes_final(self, k: int) -> bool:
        """Whether site ``k`` writes the final residual stream (after the last block, or the last MLP)."""
        site = self.sites[k]
        if site.site_kind == "resid":
            return site.layer == self.n_layers
        return site.site_kind in ("mlp_out", "transcoder") and site.layer == self.n_layers - 1

    def ablatable(self, clean: "CleanPass", k: int, acts: torch.Tensor) -> torch.Tensor:
        """``acts`` [prompts, pos, d_sae] of site ``k``, zeroed where ablating cannot matter.

        After the last block nothing mixes positions, so at a site writing there (the final
        residual, or the last block's MLP output) only the read position can matter; elsewhere
        every position from the first non-BOS token to the read position.
        """
        mask = clean.read_mask if self.writes_final(k) else clean.ablate_mask
        return acts * mask[..., None]

    def ablate(
        self,
        clean: "CleanPass",
        k: int,
        prompt_idx: torch.Tensor,
        features: torch.Tensor,
        removed: torch.Tensor,
        scale: float | torch.Tensor,
        every_position: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One batch of single-feature ablations at site ``k`` (docs/method.md#one-ablation).

        Row ``b`` adds ``scale_b * removed[b, pos] * W_dec[features[b]]`` to prompt
        ``prompt_idx[b]``'s clean residual, where ``removed`` holds the feature's clean
        activation at the positions to ablate and ``scale = c - 1`` (a float, or one per row
        for coefficient sweeps). Returns the next site's activations at the read position
        [batch, d_sae_next] (None at the last site) and the log-probabilities of the next
        token [batch, d_vocab].

        ``every_position=True`` reads every position instead ([batch, pos, d_sae_next] and
        [batch, pos, d_vocab]). By causality, position t of that result is what the sweep would
        read at t for the prompt cut after t (ablating later positions cannot reach t): the
        noise baseline uses it to get one sample per read position from a single forward.
        """
        self._residual_only("ablate")
        site = self.sites[k]
        nxt = self.sites[k + 1] if k + 1 < len(self.sites) else None
        if isinstance(scale, torch.Tensor):
            scale = scale[:, None, None]
        x = clean.resid[site.layer][prompt_idx] + scale * removed[:, :, None] * site.sae.W_dec[features][:, None, :]
        rows = torch.arange(prompt_idx.shape[0], device=self.device)
        read = clean.read[prompt_idx]
        b, n_pos = x.shape[0], x.shape[1]
        self.flops += b * cost.full_ablation_flops(
            self.shape, site.layer, n_pos, nxt.d_sae if nxt else None, n_pos if every_position else 1
        )
        down = None
        if nxt is not None:
            x = self._blocks(x, site.layer, nxt.layer)
            down = nxt.sae.encode(x if every_position else x[rows, read])
            x = self._blocks(x, nxt.layer, self.n_layers)
        else:
            x = self._blocks(x, site.layer, self.n_layers)
        if every_position:
            return down, self.log_probs_every_position(x)
        return down, torch.log_softmax(self._logits(x[rows, read]), -1)

    def _ablation_batches(self, clean: "CleanPass", k: int, p_all, f_all, removed_all):
        """Yield ``(prompt_idx, features, downs, logp)`` per batch of site ``k``'s single-feature
        ablations; ``downs`` maps each edge target's site index to its activations at the read position.

        With suffix reuse, ablations are sorted by (first ablated position, read position), so
        that consecutive ones share their suffix: each batch of ``batch_size`` recomputes
        positions from its smallest first position to its largest read position (rows whose
        feature starts later see their clean residual there, unchanged).
        """
        scale = self.config.coefficient - 1.0
        for pb, fb, removed, start, plan in self._batch_slices(clean, p_all, f_all, removed_all):
            if self.general:
                yield pb, fb, *mixed.ablate_general(self, clean, k, pb, fb, removed, scale, start)
                continue
            if start is None:
                down, logp = self.ablate(clean, k, pb, fb, removed, scale)
            elif self.delta is not None:
                down, logp = self.delta.ablate(self, clean, k, pb, fb, removed, scale, start)
            else:
                down, logp = self.ablate_suffix(clean, k, pb, fb, removed, scale, start, plan)
            yield pb, fb, ({k + 1: down} if down is not None else {}), logp

    def _batch_slices(self, clean: "CleanPass", p_all, f_all, removed_all):
        """Yield ``(prompt_idx, features, removed, start, plan)`` per batch: in stored order with every
        position (``start`` and ``plan`` None) without suffix reuse, else sorted and cut to
        ``start:stop`` as ingest/grouping.py plans (``plan``: its :class:`SuffixBatch`)."""
        bs = self.config.batch_size
        if not self.suffix_reuse:
            for i in range(0, p_all.shape[0], bs):
                yield p_all[i : i + bs], f_all[i : i + bs], removed_all[i : i + bs], None, None
            return
        order, plans = self.suffix_plan(clean, p_all, removed_all)
        for plan in plans:
            sel = order[plan.lo : plan.hi]
            yield p_all[sel], f_all[sel], removed_all[sel, plan.start : plan.stop], plan.start, plan

    def suffix_plan(self, clean: "CleanPass", p_all, removed_all) -> tuple[torch.Tensor, list[SuffixBatch]]:
        """A site's ablations (prompt ``p_all``, removed activations ``removed_all`` [pairs, pos]) sorted
        by (first ablated position, read position, prompt): the order, and its batches."""
        n_pos = removed_all.shape[1]
        active = removed_all != 0
        first = active.to(torch.int32).argmax(1)  # first True per row (argmax takes no bools)
        read = clean.read[p_all]
        order = torch.argsort(first * (n_pos + 1) + read, stable=True)  # stable: prompt order within ties
        per_row = torch.stack([first, read, p_all, active.sum(1)])[:, order].tolist()  # one host sync per site
        return order, plan_batches(*per_row, self.config.batch_size, self.max_padding)

    def ablate_suffix(
        self,
        clean: "CleanPass",
        k: int,
        prompt_idx: torch.Tensor,
        features: torch.Tensor,
        removed: torch.Tensor,
        scale: float,
        start: int,
        plan: SuffixBatch | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """:meth:`ablate` for positions ``start..start + removed.shape[1] - 1`` only.

        ``removed`` [batch, s] is the activation removed at those positions; nothing may be
        removed before ``start`` and every row's read position must lie in the suffix. Blocks
        attend over the clean pass's keys and values for positions ``< start``; in the ablated
        block only positions with a nonzero ``removed`` get new queries, keys and values; the last
        block computes the read position only. ``plan`` (from the grouping) saves counting the
        changed positions on the device. Same results as :meth:`ablate` (float rounding aside).
        """
        site = self.sites[k]
        nxt = self.sites[k + 1] if k + 1 < len(self.sites) else None
        s = removed.shape[1]
        if plan is None:
            plan = SuffixBatch(0, removed.shape[0], start, start + s, int((removed != 0).sum()), None)
        changed = _nonzero(removed != 0, plan.n_changed).unbind(1)
        x = clean.resid[site.layer][prompt_idx, start : start + s]
        x = x + scale * removed[:, :, None] * site.sae.W_dec[features][:, None, :]
        rows = torch.arange(prompt_idx.shape[0], device=self.device)
        at = clean.read[prompt_idx] - start  # each row's read position within x
        stop_down = min(nxt.layer, self.n_layers) if nxt is not None else self.n_layers
        kw = dict(shared=plan.prompt, fused=True)
        x, at = self.suffix_blocks(clean, prompt_idx, x, start, at, site.layer, stop_down, changed=changed, **kw)
        down = None
        if nxt is not None:
            down = nxt.sae.encode(x[rows, at])
            self.flops += cost.encode_flops(self.shape, prompt_idx.shape[0], nxt.d_sae)
        x, at = self.suffix_blocks(clean, prompt_idx, x, start, at, stop_down, self.n_layers, **kw)
        self.flops += cost.unembed_flops(self.shape, prompt_idx.shape[0])
        return down, torch.log_softmax(self._logits(x[rows, at]), -1)

    def suffix_blocks(
        self, clean: "CleanPass", prompt_idx: torch.Tensor, x: torch.Tensor, start: int, at: torch.Tensor, first: int,
        stop: int, changed: tuple[torch.Tensor, torch.Tensor] | None = None, shared: int | None = None, fused: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Blocks ``first..stop-1`` on the suffix ``x`` [batch, s, d_model] (absolute positions from
        ``start``) over the clean prefix's keys and values; ``at`` is each row's read position in
        ``x``. The last block of the model computes the read position only: then ``x`` comes back
        with one position and ``at`` zero.

        ``changed`` (row and position indices into ``x``): ``x`` equals the clean residual elsewhere,
        so block ``first`` reuses the clean queries, keys and values there. ``shared``: the one
        prompt every row comes from (its prefix is then shared, not gathered per row); ``fused``:
        single-kernel norms and MLP (no hooks inside them fire)."""
        sh, b, s = self.shape, prompt_idx.shape[0], x.shape[1]
        for layer in range(first, stop):
            kv = clean.kv[layer]
            past_k, past_v = (t[shared : shared + 1, :start] if shared is not None else t[prompt_idx, :start] for t in kv)
            last = layer == self.n_layers - 1
            reuse = None
            if changed is not None and layer == first:
                reuse = (*(t[prompt_idx, start : start + s] for t in (clean.q[layer], *kv)), changed)
                self.flops += cost.ablated_block_flops(sh, b, 1 if last else s, start + s, changed[0].shape[0])
            else:
                self.flops += b * cost.block_flops(sh, n_q=1 if last else s, n_new=s, n_keys=start + s)
            blk, w = self.model.blocks[layer], self.weights[layer]
            x = block_suffix(blk, w, x, past_k, past_v, query_at=at if last else None, reuse=reuse, fused=fused)
            if last:
                at = torch.zeros_like(at)
        return x, at

    def log_probs_every_position(self, resid_final: torch.Tensor) -> torch.Tensor:
        """Next-token log-probabilities at every position [batch, pos, d_vocab] from the final residual."""
        b, n_pos, d = resid_final.shape
        return torch.log_softmax(self._logits(resid_final.reshape(b * n_pos, d)), -1).reshape(b, n_pos, -1)

    @torch.no_grad()
    def ablate_sets(
        self, clean: "CleanPass", prompt_idx: torch.Tensor, sets: list[dict[int, list[int]]], coefficient: float
    ) -> torch.Tensor:
        """Joint ablation: row ``b`` ablates every feature of ``sets[b]`` (site index -> features)
        at once, in prompt ``prompt_idx[b]``; returns next-token log-probabilities [rows, d_vocab].

        Sites are visited in layer order; at each, the features' activations are those of the
        residual as it is by then (already changed by earlier sites' ablations), as a hook
        calling the SAE's encode would see them. For a single feature this is :meth:`ablate`.
        """
        self._residual_only("ablate_sets")
        rows = torch.arange(prompt_idx.shape[0], device=self.device)
        used = sorted({k for s in sets for k, feats in s.items() if feats})
        if not used:
            return clean.logp[prompt_idx]
        layer = self.sites[used[0]].layer
        x = clean.resid[layer][prompt_idx]
        for k in used:
            site = self.sites[k]
            x = self._blocks(x, layer, site.layer)
            layer = site.layer
            chosen = torch.zeros(len(sets), site.d_sae, device=self.device, dtype=x.dtype)
            for b, s in enumerate(sets):
                chosen[b, s.get(k, [])] = 1.0
            a = self.ablatable(_Rows(clean, prompt_idx), k, site.sae.encode(x)) * chosen[:, None, :]
            x = x + (coefficient - 1.0) * (a @ site.sae.W_dec)
        x = self._blocks(x, layer, self.n_layers)
        return torch.log_softmax(self._logits(x[rows, clean.read[prompt_idx]]), -1)

    def _residual_only(self, what: str) -> None:
        # Noise, validation and curves reach the sweep through these; they read residual sites by layer.
        if self.general:
            raise InputError(f"{what} supports residual SAE sites with edges to the next site only (the fast path)")

    def sweep(self, prompt: PromptInput) -> PromptResult:
        """Sweep one prompt; see :meth:`sweep_many`."""
        return self.sweep_many([prompt])[0]

    @torch.no_grad()
    def sweep_many(self, prompts: list[PromptInput]) -> list[PromptResult]:
        """Ablate every active feature of every site, for several prompts at once.

        The prompts' ablations share forward passes, ``batch_size`` at a time (see
        :meth:`clean_pass` for why padding is invisible).
        """
        cfg = self.config
        clean = self.clean_pass(prompts)
        clean_logp, clean_p = clean.logp, clean.logp.exp()
        out: dict[str, list] = {"act": [], "abl": [], "edge": [], "logit": []}
        for k, site in enumerate(self.sites):
            acts = self.site_acts(clean, k)  # [prompts, pos, d_sae]
            self.flops += cost.encode_flops(self.shape, acts.shape[0] * acts.shape[1], site.d_sae)
            nz = (acts * clean.real_mask[..., None]).nonzero()
            # Stored feature ids carry the site (the site contract's encoding; 0 for residual sites).
            out["act"].append((site.layer, nz[:, 0], nz[:, 1], nz[:, 2] + site.offset, acts[nz[:, 0], nz[:, 1], nz[:, 2]]))
            masked = self.ablatable(clean, k, acts)
            del acts
            pairs = (masked != 0).any(1).nonzero()  # (prompt, feature) to ablate, prompt-major
            if pairs.shape[0] == 0:
                continue
            p_all, f_all = pairs[:, 0], pairs[:, 1]
            removed_all = masked[p_all, :, f_all]  # [pairs, pos]: the activation removed at each position
            del masked
            out["abl"].append(
                (site.layer, p_all, f_all + site.offset, (removed_all != 0).sum(1), removed_all.abs().amax(1),
                 clean.read_acts[k][p_all, f_all])
            )  # fmt: skip
            for pb, fb, downs, logp in self._ablation_batches(clean, k, p_all, f_all, removed_all):
                fb = fb + site.offset
                for t, down in downs.items():
                    weights = down.float() - clean.read_acts[t][pb].float()  # exact difference of low-precision values
                    kk = min(cfg.edge_top_k, weights.shape[-1])
                    idx = weights.abs().topk(kk, dim=-1).indices
                    out["edge"].append((site.layer, self.sites[t].layer, pb, fb, idx + self.sites[t].offset, weights.gather(-1, idx)))
                dlogp = logp - clean_logp[pb]
                dprob = logp.exp() - clean_p[pb]
                kk = min(cfg.logit_top_k, dprob.shape[-1] // 2)
                idx = torch.cat([dprob.topk(kk, -1).indices, (-dprob).topk(kk, -1).indices], -1)
                out["logit"].append((site.layer, pb, fb, idx, dlogp.gather(-1, idx), dprob.gather(-1, idx)))

        return prompt_results(prompts, clean.lengths, clean_logp, clean_p, device_columns(out, cfg.edge_floor), cfg.top_next_k)


def _nonzero(mask: torch.Tensor, n: int) -> torch.Tensor:
    """``mask.nonzero()`` [n, dims] for a count ``n`` known on the host: no device sync where the
    device has ``nonzero_static`` (CUDA since torch 2.6), else the plain (syncing) one."""
    try:
        return torch.nonzero_static(mask, size=n)
    except (NotImplementedError, RuntimeError):
        return mask.nonzero()


class _Rows:
    """The masks of a :class:`CleanPass`, picked for some of its prompts (with repeats)."""

    def __init__(self, clean: CleanPass, prompt_idx: torch.Tensor):
        self.read_mask = clean.read_mask[prompt_idx]
        self.ablate_mask = clean.ablate_mask[prompt_idx]
