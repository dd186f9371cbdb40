"""Low-precision sweeps that propagate the ablation's difference from the clean pass (delta mode).

A plain bfloat16 sweep computes every ablated activation in full and subtracts the clean one: the
rounding of the activation (2^-8 of it in bfloat16) swamps effects a thousand times smaller. Here
the clean pass runs in float32 and caches every intermediate of every block (ln1 output, q/k/v,
attention z, attention output, ln2 output, MLP pre- and post-activation), the final LayerNorm's
output and the logits at the read position, and each SAE's pre-activation there. An ablation then
carries only its difference ``delta`` from the clean pass:

- every linear map (W_Q, W_K, W_V, W_O, W_in, W_out, W_U, the SAE encoder) is applied to the delta
  with low-precision copies of the weights and the result added to the float32 clean value (biases
  cancel in a difference);
- every nonlinear step (LayerNorm, softmax attention, the MLP activation, the SAE's activation
  function and threshold, log-softmax) runs in float32 on ``clean + delta``, and the next delta is
  ``value - clean value`` in float32.

So rounding is ~eps x |delta|, not eps x |activation|. The ablation, the positions recomputed
(suffix only, last block at the read position only), the FLOPs and what is kept are those of the
float32 suffix path (ingest/sweep.py, ingest/suffix.py); docs/sweep.md#precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from featuregraph.errors import InputError
from featuregraph.ingest import cost
from featuregraph.ingest.suffix import supports_suffix

LOW_DTYPES = ("bfloat16", "float16", "float32")
#: The run dtypes that mean delta mode where it is supported (float32 and float64 runs are plain).
DELTA_DTYPES = ("bfloat16", "float16")
#: SAE classes whose encode is ``act(process_sae_in(x) @ W_enc + b_enc)`` with the activations below.
_SAE_CLASSES = ("StandardSAE", "TopKSAE", "JumpReLUSAE")


def unsupported(sweeper: Any) -> str | None:
    """Why delta mode cannot run this sweep (None: it can)."""
    model = sweeper.model
    if sweeper.general:
        return "mixed sites or another edge target (the general path)"
    if not sweeper.suffix_reuse or not supports_suffix(model.cfg):
        return "a block layout the suffix path does not reproduce"
    cfg = model.cfg
    if getattr(cfg, "gated_mlp", False) or cfg.is_layer_norm_activation():
        return "a gated or LayerNorm-activation MLP"
    if next(model.parameters()).dtype != torch.float32:
        return "a model not loaded in float32"
    for s in sweeper.sites:
        sae = s.sae
        if type(sae).__name__ not in _SAE_CLASSES or sae.dtype != torch.float32:
            return f"SAE {s.hook_name}: {type(sae).__name__} in {sae.dtype}"
        if getattr(sae.cfg, "normalize_activations", "none") != "none":
            return f"SAE {s.hook_name}: input normalization {sae.cfg.normalize_activations!r}"
    return None


def precision_label(dtype: str, delta: bool) -> str:
    """The recorded precision of a run: ``float32``, ``delta-bfloat16`` or (full low precision) ``bfloat16``."""
    return f"delta-{dtype}" if delta and dtype != "float32" else dtype


def sae_pre(sae: Any, x: torch.Tensor) -> torch.Tensor:
    """The SAE's pre-activation of ``x``, computed exactly as its own ``encode`` does."""
    return sae.hook_sae_acts_pre(sae.process_sae_in(x) @ sae.W_enc + sae.b_enc)


def sae_activate(sae: Any, pre: torch.Tensor) -> torch.Tensor:
    """The SAE's activations from its pre-activation (the rest of its ``encode``; classes in ``_SAE_CLASSES``)."""
    if getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        pre = pre * sae.W_dec.norm(dim=-1)
    acts = sae.activation_fn(pre)
    if type(sae).__name__ == "JumpReLUSAE":
        acts = acts * (pre > sae.threshold).to(acts.dtype)
    return sae.hook_sae_acts_post(acts)


@dataclass
class _BlockCache:
    """One block's clean intermediates at every position of a prompt group, float32."""

    h1: torch.Tensor  # ln1 output [P, pos, d_model]
    q: torch.Tensor  # [P, pos, heads, d_head]
    k: torch.Tensor
    v: torch.Tensor
    z: torch.Tensor  # attention z [P, pos, heads, d_head]
    mid: torch.Tensor  # resid + attention output
    h2: torch.Tensor  # ln2 output
    pre: torch.Tensor  # MLP pre-activation [P, pos, d_mlp]
    post: torch.Tensor


@dataclass
class _Cache:
    blocks: list[_BlockCache]
    final_h: torch.Tensor  # final LayerNorm output at the read position [P, d_model]
    logits: torch.Tensor  # logits there (before any soft cap) [P, d_vocab]
    sae_pre: list[torch.Tensor]  # each site's SAE pre-activation at the read position [P, d_sae]


def _attend(attn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Causal attention z from queries, keys and values (the model's scale and soft cap), float32."""
    scores = attn.calculate_attention_scores(q, k)
    scores = torch.where(allowed, scores, attn.IGNORE.to(scores.device))
    pattern = F.softmax(scores, dim=-1)
    pattern = torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern)
    return attn.calculate_z_scores(v, pattern)


def _flat_in(w: torch.Tensor) -> torch.Tensor:
    """[heads, d_model, d_head] -> [d_model, heads * d_head]."""
    return w.permute(1, 0, 2).reshape(w.shape[1], -1)


class DeltaPass:
    """Delta-mode ablations for one :class:`~featuregraph.ingest.sweep.Sweeper` (set as its ``delta``).

    ``dtype`` is the arithmetic of the linear maps: ``bfloat16``, ``float16`` or ``float32`` (the
    last equals the float32 sweep up to float rounding: the check that the propagation is exact).
    """

    def __init__(self, sweeper: Any, dtype: str):
        if dtype not in LOW_DTYPES:
            raise InputError(f"unknown dtype {dtype!r}; choose from {', '.join(LOW_DTYPES)}")
        why = unsupported(sweeper)
        if why is not None:
            raise InputError(f"low-precision delta mode does not support this sweep: {why}")
        self.dtype = dtype
        td = getattr(torch, dtype)
        model = sweeper.model

        def low(w: torch.Tensor) -> torch.Tensor:  # an F.linear weight [out, in] in the low dtype
            return w.detach().to(td).contiguous()

        self.w = []
        for block in model.blocks:
            a, m = block.attn, block.mlp
            self.w.append({
                "q": low(_flat_in(a.W_Q).T), "k": low(_flat_in(a.W_K).T), "v": low(_flat_in(a.W_V).T),
                "o": low(a.W_O.reshape(-1, a.W_O.shape[-1]).T), "in": low(m.W_in.T), "out": low(m.W_out.T),
            })  # fmt: skip
        self.w_u = low(model.unembed.W_U.T)
        self.w_enc = [low(s.sae.W_enc.T) for s in sweeper.sites]
        self._clean: Any = None
        self._cache: _Cache | None = None

    @staticmethod
    def lin(d: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """A linear map (no bias) of the float32 delta ``d`` in the weights' dtype, back to float32."""
        return F.linear(d.to(w.dtype), w).float()

    # -- the clean cache ------------------------------------------------------------

    def cache(self, sw: Any, clean: Any) -> _Cache:
        """The clean intermediates of ``clean``'s prompt group (computed once per group)."""
        if self._clean is not clean:
            self._cache, self._clean = self._build(sw, clean), clean
        return self._cache

    def _build(self, sw: Any, clean: Any) -> _Cache:
        model = sw.model
        blocks = []
        for layer, block in enumerate(model.blocks):
            x = clean.resid[layer]
            n_pos = x.shape[1]
            h1 = block.ln1(x)
            k, v = clean.kv[layer]  # delta mode runs only with suffix reuse, which caches them
            q = clean.q[layer]
            allowed = torch.ones(n_pos, n_pos, dtype=torch.bool, device=x.device).tril()[None, None]
            z = _attend(block.attn, q, k, v, allowed)
            mid = x + (F.linear(z.flatten(-2), block.attn.W_O.reshape(-1, block.attn.W_O.shape[-1]).T, block.attn.b_O))
            h2 = block.ln2(mid)
            pre = h2 @ block.mlp.W_in + block.mlp.b_in
            blocks.append(_BlockCache(h1, q, k, v, z, mid, h2, pre, block.mlp.act_fn(pre)))
        rows = torch.arange(len(clean.lengths), device=sw.device)
        final_h = self._final_ln(model, clean.resid[sw.n_layers][rows, clean.read])
        logits = model.unembed(final_h[:, None])[:, 0].float()
        pres = [sae_pre(s.sae, clean.resid[s.layer][rows, clean.read]) for s in sw.sites]
        return _Cache(blocks, final_h, logits, pres)

    @staticmethod
    def _final_ln(model: Any, x: torch.Tensor) -> torch.Tensor:
        return model.ln_final(x[:, None])[:, 0] if model.cfg.normalization_type is not None else x

    # -- one batch of ablations -----------------------------------------------------

    def ablate(self, sw: Any, clean: Any, k: int, prompt_idx, features, removed, scale, start: int):
        """:meth:`Sweeper.ablate_suffix` in delta mode: same arguments, same results (float
        rounding of the linear maps in the low dtype aside). FLOPs: the suffix path's, except that the
        ablated block recomputes every suffix position (the float32 path reuses the clean queries,
        keys and values where the feature was inactive; not done here yet)."""
        c = self.cache(sw, clean)
        site = sw.sites[k]
        nxt = sw.sites[k + 1] if k + 1 < len(sw.sites) else None
        d = scale * removed[:, :, None] * site.sae.W_dec[features][:, None, :]  # the float32 path's own update
        d = d.float()
        rows = torch.arange(prompt_idx.shape[0], device=sw.device)
        at = clean.read[prompt_idx] - start
        stop_down = min(nxt.layer, sw.n_layers) if nxt is not None else sw.n_layers
        d, at = self._blocks(sw, c, prompt_idx, d, start, at, site.layer, stop_down)
        down = None
        if nxt is not None:
            pre = c.sae_pre[k + 1][prompt_idx] + self.lin(d[rows, at], self.w_enc[k + 1])
            down = sae_activate(nxt.sae, pre)
            sw.flops += cost.encode_flops(sw.shape, prompt_idx.shape[0], nxt.d_sae)
        d, at = self._blocks(sw, c, prompt_idx, d, start, at, stop_down, sw.n_layers)
        sw.flops += cost.unembed_flops(sw.shape, prompt_idx.shape[0])
        x_final = clean.resid[sw.n_layers][prompt_idx, clean.read[prompt_idx]] + d[rows, at]
        dh = self._final_ln(sw.model, x_final) - c.final_h[prompt_idx]
        logits = c.logits[prompt_idx] + self.lin(dh, self.w_u)
        cap = getattr(sw.model.cfg, "output_logits_soft_cap", -1.0) or -1.0
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return down, torch.log_softmax(logits, -1)

    def _blocks(self, sw: Any, c: _Cache, pidx, d, start: int, at, first: int, stop: int):
        """Blocks ``first..stop-1`` on the suffix delta ``d`` [batch, s, d_model] (positions from
        ``start``); the model's last block computes the read position only (as ingest/suffix.py)."""
        b, s = d.shape[0], d.shape[1]
        for layer in range(first, stop):
            last = layer == sw.n_layers - 1
            d = self._block(sw, c, layer, pidx, d, start, at if last else None)
            sw.flops += b * cost.block_flops(sw.shape, n_q=1 if last else s, n_new=s, n_keys=start + s)
            if last:
                at = torch.zeros_like(at)
        return d, at

    def _block(self, sw: Any, c: _Cache, layer: int, pidx, d, start: int, query_at):
        block, cb, w = sw.model.blocks[layer], c.blocks[layer], self.w[layer]
        s = d.shape[1]
        sl = slice(start, start + s)
        dh1 = block.ln1(self._clean.resid[layer][pidx, sl] + d) - cb.h1[pidx, sl]
        heads = cb.k.shape[2:]
        k_suf = cb.k[pidx, sl] + self.lin(dh1, w["k"]).reshape(*dh1.shape[:2], *heads)
        v_suf = cb.v[pidx, sl] + self.lin(dh1, w["v"]).reshape(*dh1.shape[:2], *heads)
        k = torch.cat([cb.k[pidx, :start], k_suf], 1)
        v = torch.cat([cb.v[pidx, :start], v_suf], 1)
        keys = torch.arange(start + s, device=d.device)
        if query_at is None:
            qpos = start + torch.arange(s, device=d.device)
            allowed = (keys[None, :] <= qpos[:, None])[None, None]
            rows_q, pos_q, dq_in, dx = pidx[:, None], qpos[None, :], dh1, d
        else:
            rows = torch.arange(d.shape[0], device=d.device)
            qpos = start + query_at
            allowed = (keys[None, :] <= qpos[:, None])[:, None, None]
            rows_q, pos_q = pidx[:, None], qpos[:, None]
            dq_in, dx = dh1[rows, query_at][:, None], d[rows, query_at][:, None]
        q = cb.q[rows_q, pos_q] + self.lin(dq_in, w["q"]).reshape(*dq_in.shape[:2], *heads)
        dz = _attend(block.attn, q, k, v, allowed) - cb.z[rows_q, pos_q]
        dmid = dx + self.lin(dz.flatten(-2), w["o"])
        dh2 = block.ln2(cb.mid[rows_q, pos_q] + dmid) - cb.h2[rows_q, pos_q]
        pre = cb.pre[rows_q, pos_q] + self.lin(dh2, w["in"])
        dpost = block.mlp.act_fn(pre) - cb.post[rows_q, pos_q]
        return dmid + self.lin(dpost, w["out"])


def with_delta(sweeper: Any, dtype: str) -> Any:
    """``sweeper`` (float32 model and SAEs) set to delta mode in ``dtype``; returns it."""
    sweeper.delta = DeltaPass(sweeper, dtype)
    return sweeper


def load_dtype(dtype: str) -> str:
    """The dtype a run asking for ``dtype`` loads its model and SAEs in: float32 for bfloat16/float16
    (delta mode keeps the clean pass in float32; :func:`make_sweeper` casts down a run it cannot serve)."""
    return "float32" if dtype in DELTA_DTYPES else dtype


def run_precision(model: Any, sites: list, sweep_config: Any, prepend_bos: bool, dtype: str) -> str:
    """The recorded precision of a run asking for ``dtype`` (see :func:`make_sweeper`), without building it."""
    from featuregraph.ingest.sweep import Sweeper

    if dtype not in DELTA_DTYPES:
        return dtype
    return precision_label(dtype, unsupported(Sweeper(model, sites, sweep_config, prepend_bos)) is None)


def make_sweeper(model: Any, sites: list, sweep_config: Any, prepend_bos: bool, dtype: str) -> tuple[Any, str]:
    """The sweeper of a run asking for ``dtype``, given its model and SAEs loaded in :func:`load_dtype`, and the run's
    recorded precision: ``float32``; ``delta-<dtype>`` where delta mode supports the run; else
    ``<dtype>`` with the model and SAEs cast to it (every forward pass in low precision)."""
    from featuregraph.ingest.precision import cast
    from featuregraph.ingest.sweep import Sweeper

    sweeper = Sweeper(model, sites, sweep_config, prepend_bos)
    if dtype not in DELTA_DTYPES:
        return sweeper, dtype
    if unsupported(sweeper) is None:
        return with_delta(sweeper, dtype), precision_label(dtype, True)
    low_model, low_sites = cast(model, sites, dtype)
    return Sweeper(low_model, low_sites, sweep_config, prepend_bos), precision_label(dtype, False)


__all__ = ["DELTA_DTYPES", "DeltaPass", "LOW_DTYPES", "load_dtype", "make_sweeper", "precision_label", "run_precision", "sae_activate", "sae_pre", "unsupported", "with_delta"]
