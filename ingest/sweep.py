"""The batched SAE ablation sweep (DESIGN.md, "One ablation", "Edges", "Logit effects").

For one prompt, every SAE feature active at an ablated position is ablated in turn:
``x <- x + (c - 1) * a_i * W_dec[i]`` at each ablated position of its site, where ``a`` is
the SAE's own ``encode`` of the clean residual. The SAE's reconstruction error never enters
the model; only the ablation's own effect does. We record, at the read position:

- edges into the next SAE site: ``act_down[ablated] - act_down[clean]``;
- logit effects: ``logp_ablated - logp_clean`` and ``p_ablated - p_clean``.

Why it is fast (DESIGN.md, "What makes it fast"): the clean residual at every site is
computed once and reused, so an ablation at layer L only runs blocks L.. onward; many
ablations share one forward as a batch of rank-1 updates; results stay on the device and
are copied to the host once per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from featuregraph.errors import InputError
from ingest.config import SweepConfig
from ingest.loading import SaeSite
from store.models import PromptResult


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


class Sweeper:
    """Runs the sweep for one model and its SAE sites (sorted by layer)."""

    def __init__(self, model: Any, sites: list[SaeSite], config: SweepConfig, prepend_bos: bool):
        if not sites:
            raise InputError("the sweep needs at least one SAE")
        self.model = model
        self.sites = sites
        self.config = config
        self.prepend_bos = prepend_bos
        self.n_layers = int(model.cfg.n_layers)
        self.device = next(model.parameters()).device

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
        logits = self.model.unembed(x)[:, 0, :].float()
        cap = getattr(self.model.cfg, "output_logits_soft_cap", -1.0) or -1.0
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def clean_residuals(self, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
        """Clean residual stream [pos, d_model] at every layer 0..n_layers (input of block L)."""
        resid = self.model(tokens[None], stop_at_layer=0)
        out = {0: resid[0]}
        for layer in range(self.n_layers):
            resid = self.model.blocks[layer](resid)
            out[layer + 1] = resid[0]
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
    def sweep(self, prompt: PromptInput) -> PromptResult:
        """Ablate every active feature of every site for one prompt; see the module docstring."""
        cfg = self.config
        tokens = torch.tensor(prompt.token_ids, device=self.device, dtype=torch.long)
        n_tok = len(prompt.token_ids)
        first, read = self.positions(n_tok)
        resid = self.clean_residuals(tokens)
        clean_logits = self._logits(resid[self.n_layers][read][None])[0]
        clean_logp = torch.log_softmax(clean_logits, -1)
        clean_p = clean_logp.exp()
        clean_acts = [site.sae.encode(resid[site.layer]) for site in self.sites]  # [pos, d_sae]

        pos_mask = torch.zeros(n_tok, 1, device=self.device, dtype=clean_acts[0].dtype)
        pos_mask[first : read + 1] = 1.0
        # After the last block nothing mixes positions: there only the read position can matter.
        last_mask = torch.zeros_like(pos_mask)
        last_mask[read] = 1.0

        act_parts, abl_parts, edge_parts, logit_parts = [], [], [], []
        for k, site in enumerate(self.sites):
            acts = clean_acts[k]
            act_parts.append((site.layer, acts))
            masked = acts * (last_mask if site.layer == self.n_layers else pos_mask)
            feats = (masked != 0).any(0).nonzero()[:, 0]  # features active at an ablated position
            if feats.numel() == 0:
                continue
            abl_parts.append(
                (site.layer, feats, (masked[:, feats] != 0).sum(0), masked[:, feats].abs().amax(0), acts[read, feats])
            )
            nxt = self.sites[k + 1] if k + 1 < len(self.sites) else None
            for start in range(0, feats.numel(), cfg.batch_size):
                f = feats[start : start + cfg.batch_size]
                a = masked[:, f].T.contiguous()  # [batch, pos]
                w_dec = site.sae.W_dec[f]  # [batch, d_model]
                x = resid[site.layer][None] + (cfg.coefficient - 1.0) * a[:, :, None] * w_dec[:, None, :]
                stop = nxt.layer if nxt is not None else self.n_layers
                x = self._blocks(x, site.layer, stop)
                if nxt is not None:
                    weights = nxt.sae.encode(x[:, read]) - clean_acts[k + 1][read][None]
                    kk = min(cfg.edge_top_k, weights.shape[-1])
                    idx = weights.abs().topk(kk, dim=-1).indices
                    edge_parts.append((site.layer, nxt.layer, f, idx, weights.gather(-1, idx)))
                    x = self._blocks(x, nxt.layer, self.n_layers)
                logp = torch.log_softmax(self._logits(x[:, read]), -1)
                dlogp = logp - clean_logp[None]
                dprob = logp.exp() - clean_p[None]
                kk = min(cfg.logit_top_k, dprob.shape[-1] // 2)
                idx = torch.cat([dprob.topk(kk, -1).indices, (-dprob).topk(kk, -1).indices], -1)
                logit_parts.append((site.layer, f, idx, dlogp.gather(-1, idx), dprob.gather(-1, idx)))

        top = clean_p.topk(min(cfg.top_next_k, clean_p.shape[-1]))
        return PromptResult(
            prompt_id=prompt.prompt_id,
            text=prompt.text,
            tag=prompt.tag,
            metadata=prompt.metadata,
            tables={
                "tokens": {
                    "position": np.arange(n_tok, dtype=np.int16),
                    "token_id": np.asarray(prompt.token_ids, dtype=np.int32),
                    "token": np.asarray(prompt.tokens or [str(t) for t in prompt.token_ids], dtype=object),
                },
                "top_next_tokens": {
                    "rank": np.arange(1, top.indices.numel() + 1, dtype=np.int16),
                    "token_id": _np(top.indices).astype(np.int32),
                    "prob": _np(top.values).astype(np.float32),
                    "logp": _np(clean_logp[top.indices]).astype(np.float32),
                },
                "activations": _activations_table(act_parts),
                "ablations": _ablations_table(abl_parts),
                "edges": _edges_table(edge_parts, cfg.edge_floor),
                "logit_effects": _logits_table(logit_parts),
            },
        )


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


def _activations_table(parts) -> dict[str, np.ndarray]:
    layers, positions, features, values = [], [], [], []
    for layer, acts in parts:
        nz = acts.nonzero()
        pos, feat = nz[:, 0], nz[:, 1]
        vals = _np(acts[pos, feat])
        layers.append(np.full(len(vals), layer, np.int16))
        positions.append(_np(pos).astype(np.int16))
        features.append(_np(feat).astype(np.int32))
        values.append(vals.astype(np.float32))
    return _cat(
        {"layer": layers, "position": positions, "feature": features, "activation": values},
        {"layer": np.int16, "position": np.int16, "feature": np.int32, "activation": np.float32},
    )


def _ablations_table(parts) -> dict[str, np.ndarray]:
    cols: dict[str, list] = {k: [] for k in ("layer", "feature", "n_positions", "max_activation", "read_activation")}
    for layer, feats, n_pos, amax, aread in parts:
        cols["layer"].append(np.full(feats.numel(), layer, np.int16))
        cols["feature"].append(_np(feats).astype(np.int32))
        cols["n_positions"].append(_np(n_pos).astype(np.int16))
        cols["max_activation"].append(_np(amax).astype(np.float32))
        cols["read_activation"].append(_np(aread).astype(np.float32))
    return _cat(
        cols,
        {"layer": np.int16, "feature": np.int32, "n_positions": np.int16, "max_activation": np.float32, "read_activation": np.float32},
    )


def _edges_table(parts, floor: float) -> dict[str, np.ndarray]:
    cols: dict[str, list] = {k: [] for k in ("up_layer", "up_feature", "down_layer", "down_feature", "weight")}
    for up_layer, down_layer, feats, idx, w in parts:
        w_np = _np(w)
        keep = np.abs(w_np) > floor
        up = np.broadcast_to(_np(feats)[:, None], w_np.shape)
        n = int(keep.sum())
        cols["up_layer"].append(np.full(n, up_layer, np.int16))
        cols["up_feature"].append(up[keep].astype(np.int32))
        cols["down_layer"].append(np.full(n, down_layer, np.int16))
        cols["down_feature"].append(_np(idx)[keep].astype(np.int32))
        cols["weight"].append(w_np[keep].astype(np.float32))
    return _cat(
        cols,
        {"up_layer": np.int16, "up_feature": np.int32, "down_layer": np.int16, "down_feature": np.int32, "weight": np.float32},
    )


def _logits_table(parts) -> dict[str, np.ndarray]:
    cols: dict[str, list] = {k: [] for k in ("layer", "feature", "token_id", "dlogp", "dprob")}
    for layer, feats, idx, dlogp, dprob in parts:
        idx_np = _np(idx)
        cols["layer"].append(np.full(idx_np.size, layer, np.int16))
        cols["feature"].append(np.repeat(_np(feats), idx_np.shape[1]).astype(np.int32))
        cols["token_id"].append(idx_np.reshape(-1).astype(np.int32))
        cols["dlogp"].append(_np(dlogp).reshape(-1).astype(np.float32))
        cols["dprob"].append(_np(dprob).reshape(-1).astype(np.float32))
    return _cat(cols, {"layer": np.int16, "feature": np.int32, "token_id": np.int32, "dlogp": np.float32, "dprob": np.float32})


def _cat(cols: dict[str, list], dtypes: dict[str, type]) -> dict[str, np.ndarray]:
    return {k: (np.concatenate(v) if v else np.empty(0, dtypes[k])) for k, v in cols.items()}
