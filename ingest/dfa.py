"""Direct feature attribution (DFA) of attention-output SAE features (docs/method.md#direct-feature-attribution).

An attention-output SAE reads ``blocks.L.attn.hook_z``: ``z[t, h] = sum_s A[h, t, s] v_h(s)``,
its heads flattened head-major (``... n_heads d_head -> ... (n_heads d_head)``, as sae_lens'
``reshape_activations = "hook_z"`` does), so head ``h`` owns the encoder rows
``h*d_head : (h+1)*d_head``. A feature's pre-activation at the read position ``t`` is affine in
``z[t]``, hence exactly

    pre_i(t) = sum_{h,s} A[h,t,s] <v_h(s), W_enc[h-block, i]>  +  b_enc[i]  -  <b_dec, W_enc[:, i]>

(the last term only when the SAE subtracts ``b_dec`` before encoding; for a TopK SAE that
rescales by decoder norms, ``W_enc`` and ``b_enc`` carry that factor). "Pre-activation" is what
the SAE's activation function receives: ReLU(pre) for a standard SAE, pre where pre > threshold
for JumpReLU, ReLU(pre) among the k largest for TopK.

One level down (:func:`resid_split`): with the attention pattern and block L's ln1 scale frozen
at their clean values, ``v_h(s)`` is affine in the residual ``x_L(s)``, so a head-source part
splits over the pieces of ``x_L(s)`` as the residual SAE at layer L writes it: each active
feature's ``a_j W_dec[j]``, its ``b_dec``, its reconstruction error, plus a constant (ln1's bias
and the value bias) that belongs to no piece.

Every part is a contribution: positive parts raise the pre-activation. Removing a part (with
the frozen quantities held) changes the pre-activation by minus the part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from featuregraph.errors import InputError, LoadError
from featuregraph.store.models import encode_feature
from featuregraph.store.tables import value_columns

HOOK_Z = re.compile(r"^blocks\.(\d+)\.attn\.hook_z$")
ARCHITECTURES = ("standard", "jumprelu", "topk")
CENTERED_NORMS = ("LN", "LNPre")  # RMS / RMSPre scale without centering
F64 = torch.float64


@dataclass(frozen=True)
class DfaSettings:
    """What is stored per (prompt, attention feature).

    ``top_k`` head-source parts by |part| (the rest summed into one 'rest' row); the
    ``recurse`` largest of them split over the residual SAE's features, ``resid_top_k``
    upstream features each (the rest summed likewise); at most ``max_features`` attention
    features per prompt, the most active first.
    """

    top_k: int = 16
    resid_top_k: int = 16
    recurse: int = 4
    max_features: int = 64

    def __post_init__(self) -> None:
        for name in ("top_k", "resid_top_k", "max_features"):
            if getattr(self, name) < 1:
                raise InputError(f"DFA {name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.recurse <= self.top_k:
            raise InputError(f"DFA recurse must be between 0 and top-k ({self.top_k}), got {self.recurse}")


@dataclass
class ResidSplit:
    """One head-source part split over the residual SAE at the source position (sums to the part)."""

    head: int
    source: int
    features: np.ndarray  # residual SAE units active at the source
    values: np.ndarray  # their contributions, float64
    error: float  # the residual SAE's reconstruction error at the source
    decoder_bias: float  # the residual SAE's b_dec
    bias: float  # ln1's bias and the value bias b_V: constant, not part of the residual

    @property
    def total(self) -> float:
        return float(self.values.sum() + self.error + self.decoder_bias + self.bias)


@dataclass
class FeatureDfa:
    """One attention feature's pre-activation at the read position, split by head and source."""

    index: int  # the SAE unit
    activation: float  # the SAE's own encode at the read position
    pre_activation: float
    parts: np.ndarray  # [n_heads, n_positions] float64: A[h,t,s] <v_h(s), W_enc[h-block, i]>
    encoder_bias: float  # b_enc[i]
    decoder_bias: float  # -<b_dec, W_enc[:, i]> (0 when the SAE does not subtract b_dec)
    splits: list[ResidSplit] = field(default_factory=list)

    @property
    def total(self) -> float:
        return float(self.parts.sum() + self.encoder_bias + self.decoder_bias)


@dataclass
class AttentionCache:
    """Block L's clean quantities for one prompt (batch of one): what DFA reads and freezes."""

    layer: int
    pattern: torch.Tensor  # [H, T, S]
    v: torch.Tensor  # [S, H, d_head], value bias included
    z: torch.Tensor  # [T, H, d_head]
    scale: torch.Tensor  # [S] ln1 scale (sigma)
    resid: torch.Tensor  # [S, d_model] blocks.L.hook_resid_pre


def hook_z_layer(hook_name: str) -> int | None:
    m = HOOK_Z.match(hook_name)
    return int(m.group(1)) if m else None


def check_attention_sae(model: Any, sae: Any) -> int:
    """The block index of an attention-output SAE that DFA can decompose; LoadError otherwise."""
    hook = sae.cfg.metadata.hook_name
    layer = hook_z_layer(hook or "")
    if layer is None:
        raise LoadError(f"DFA needs an attention-output SAE on blocks.L.attn.hook_z, not {hook!r}")
    arch = sae.cfg.architecture()
    if arch not in ARCHITECTURES:
        raise LoadError(f"DFA supports {', '.join(ARCHITECTURES)} SAEs, not {arch!r} (SAE on {hook})")
    if sae.cfg.normalize_activations != "none":
        raise LoadError(
            f"DFA needs an SAE without input normalization; {hook} uses {sae.cfg.normalize_activations!r}"
        )
    cfg = model.cfg
    width = cfg.n_heads * cfg.d_head
    if sae.cfg.d_in != width:
        raise LoadError(
            f"SAE on {hook} has d_in {sae.cfg.d_in}, but hook_z is n_heads * d_head = {width} wide"
        )
    if not 0 <= layer < cfg.n_layers:
        raise LoadError(f"SAE on {hook}: the model has {cfg.n_layers} blocks")
    if getattr(cfg, "n_key_value_heads", None) not in (None, cfg.n_heads):
        raise LoadError("DFA does not support grouped-query attention (n_key_value_heads < n_heads)")
    if getattr(cfg, "use_attn_in", False) or getattr(cfg, "use_split_qkv_input", False):
        raise LoadError(
            "DFA needs the model's values read from ln1 of the residual (use_attn_in/use_split_qkv_input off)"
        )
    return layer


def check_resid_sae(sae: Any) -> None:
    if sae.cfg.normalize_activations != "none" or getattr(sae.cfg, "reshape_activations", "none") != "none":
        raise LoadError(
            f"DFA recursion needs a residual SAE without input normalization ({sae.cfg.metadata.hook_name})"
        )


@torch.no_grad()
def attention_cache(model: Any, tokens: torch.Tensor, layer: int) -> AttentionCache:
    """One clean forward of ``tokens`` ([1, P] ids) up to block ``layer``'s attention."""
    names = {
        "pattern": f"blocks.{layer}.attn.hook_pattern",
        "v": f"blocks.{layer}.attn.hook_v",
        "z": f"blocks.{layer}.attn.hook_z",
        "scale": f"blocks.{layer}.ln1.hook_scale",
        "resid": f"blocks.{layer}.hook_resid_pre",
    }
    if tokens.ndim != 2 or tokens.shape[0] != 1:
        raise InputError(
            f"DFA takes one prompt at a time (tokens of shape [1, P]), got {tuple(tokens.shape)}"
        )
    _, cache = model.run_with_cache(tokens, names_filter=list(names.values()), stop_at_layer=layer + 1)
    got = {key: cache[name][0] for key, name in names.items()}
    return AttentionCache(layer, got["pattern"], got["v"], got["z"], got["scale"].reshape(-1), got["resid"])


def encoder_columns(sae: Any, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W [d_in, F], b [F], b_in [d_in])`` in float64 such that the pre-activation of units
    ``index`` is ``(x - b_in) @ W + b``: sae_lens' encoder, with a TopK SAE's decoder-norm
    rescaling folded in and ``b_in = b_dec`` only when the SAE subtracts it."""
    w = sae.W_enc[:, index].to(F64)
    b = sae.b_enc[index].to(F64)
    if sae.cfg.architecture() == "topk" and getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        norm = sae.W_dec[index].to(F64).norm(dim=-1)
        w, b = w * norm, b * norm
    b_in = sae.b_dec.to(F64) * float(bool(sae.cfg.apply_b_dec_to_input))
    return w, b, b_in


@torch.no_grad()
def attention_dfa(
    model: Any,
    sae: Any,
    cache: AttentionCache,
    read: int,
    features: Sequence[int] | None = None,
    limit: int | None = None,
) -> list[FeatureDfa]:
    """DFA of attention features at read position ``read``.

    ``features``: the SAE units to decompose (default: every unit active at ``read`` by the SAE's
    own encode, the most active first, at most ``limit``). Parts are float64, shape [H, S].
    """
    check_attention_sae(model, sae)
    n_heads, d_head = model.cfg.n_heads, model.cfg.d_head
    if not 0 <= read < cache.z.shape[0]:
        raise InputError(f"read position {read} is outside the prompt's {cache.z.shape[0]} tokens")
    # sae_lens flattens heads itself when reshape_activations is "hook_z"; otherwise it takes them flat.
    z_in = (
        cache.z[read]
        if getattr(sae.cfg, "reshape_activations", "none") == "hook_z"
        else cache.z[read].reshape(-1)
    )
    acts = sae.encode(z_in.unsqueeze(0).to(sae.dtype))[0]
    if features is None:
        active = torch.nonzero(acts > 0).flatten()
        index = active[torch.argsort(acts[active], descending=True, stable=True)][:limit]
    else:
        index = torch.as_tensor(list(features), dtype=torch.long, device=acts.device)
        if index.numel() and not bool(((index >= 0) & (index < sae.cfg.d_sae)).all()):
            raise InputError(f"attention SAE features must be in 0..{sae.cfg.d_sae - 1}")
    if index.numel() == 0:
        return []
    w, b, b_in = encoder_columns(sae, index)
    z_flat = cache.z[read].reshape(-1).to(F64)
    pre = (z_flat - b_in) @ w + b
    # [F, H, S]: A[h, t, s] * <v_h(s), W_enc[h-block, i]>
    per_source = torch.einsum("shd,hdf->fhs", cache.v.to(F64), w.reshape(n_heads, d_head, -1))
    parts = cache.pattern[:, read, :].to(F64).unsqueeze(0) * per_source
    centering = -(b_in @ w)
    out = []
    for k, i in enumerate(index.tolist()):
        out.append(
            FeatureDfa(
                i, float(acts[i]), float(pre[k]), parts[k].cpu().numpy(), float(b[k]), float(centering[k])
            )
        )
    return out


def _value_reader(model: Any, layer: int, w_head: torch.Tensor, head: int) -> tuple[torch.Tensor, float]:
    """``(u, c)``: for the normalized residual n (before ln1's weight and bias), head ``head``'s
    value read by encoder rows ``w_head`` is ``<n, u> + c``."""
    block = model.blocks[layer]
    u = block.attn.W_V[head].to(F64) @ w_head  # [d_model]
    c = float(block.attn.b_V[head].to(F64) @ w_head)
    ln = block.ln1
    if getattr(ln, "b", None) is not None:
        c += float(ln.b.to(F64) @ u)
    if getattr(ln, "w", None) is not None:
        u = u * ln.w.to(F64)
    return u, c


def _normalized(model: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Pieces ``x`` [..., d_model] of the residual through ln1 with the scale frozen: centered
    as LayerNorm centers (not for RMSNorm), divided by the clean scale."""
    if model.cfg.normalization_type in CENTERED_NORMS:
        x = x - x.mean(-1, keepdim=True)
    return x / scale


@dataclass
class ResidPieces:
    """The residual at every source position as the residual SAE writes it (float64 pieces):
    its active features' ``a_j W_dec[j]`` (:meth:`at`, computed for a source when first asked),
    its ``b_dec`` and its reconstruction error."""

    sae: Any
    acts: torch.Tensor  # [S, d_sae] the SAE's own encode
    decoder_bias: torch.Tensor  # [d_model]
    error: torch.Tensor  # [S, d_model]: x - decode(acts), by the SAE's own decode
    _pieces: dict[int, tuple[np.ndarray, torch.Tensor]] = field(default_factory=dict)
    _normalized: dict[int, torch.Tensor] = field(default_factory=dict)

    def at(self, source: int) -> tuple[np.ndarray, torch.Tensor]:
        """``(units, pieces [n, d_model])`` of the features active at ``source``."""
        if source not in self._pieces:
            j = torch.nonzero(self.acts[source] > 0).flatten()
            rows = self.sae.W_dec[j].to(F64)
            if getattr(self.sae.cfg, "rescale_acts_by_decoder_norm", False):
                rows = rows / rows.norm(dim=-1, keepdim=True)  # as sae_lens' act_times_W_dec decodes
            self._pieces[source] = (j.cpu().numpy(), self.acts[source, j].to(F64).unsqueeze(-1) * rows)
        return self._pieces[source]

    def normalized(self, model: Any, source: int, sigma: torch.Tensor) -> torch.Tensor:
        """The source's pieces through ln1 with the scale frozen at ``sigma``, stacked
        ``[features..., error, decoder_bias]`` (kept: several heads and features read them)."""
        if source not in self._normalized:
            stacked = torch.cat([self.at(source)[1], self.error[source][None], self.decoder_bias[None]])
            self._normalized[source] = _normalized(model, stacked, sigma)
        return self._normalized[source]


@torch.no_grad()
def resid_pieces(resid_sae: Any, resid: torch.Tensor) -> ResidPieces:
    """Split the clean residual ``resid`` [S, d_model] into the residual SAE's active features,
    its ``b_dec`` and its error (the SAE's own encode and decode; the pieces sum back to ``resid``)."""
    check_resid_sae(resid_sae)
    acts = resid_sae.encode(resid.to(resid_sae.dtype))
    error = resid.to(F64) - resid_sae.decode(acts).to(F64)
    return ResidPieces(resid_sae, acts, resid_sae.b_dec.to(F64), error)


@torch.no_grad()
def resid_split(
    model: Any,
    sae: Any,
    cache: AttentionCache,
    pieces: ResidPieces,
    feature: FeatureDfa,
    read: int,
    head: int,
    source: int,
) -> ResidSplit:
    """Head ``head``'s part from ``source`` of ``feature``, split over the residual pieces at the
    source (pattern and ln1 scale frozen at the clean run's). The values sum to ``parts[head, source]``."""
    d_head = model.cfg.d_head
    w, _, _ = encoder_columns(sae, torch.tensor([feature.index], device=sae.W_enc.device))
    u, c = _value_reader(model, cache.layer, w[head * d_head : (head + 1) * d_head, 0], head)
    a = float(cache.pattern[head, read, source])
    values = (a * (pieces.normalized(model, source, cache.scale[source].to(F64)) @ u)).cpu().numpy()
    return ResidSplit(
        head, source, pieces.at(source)[0], values[:-2], float(values[-2]), float(values[-1]), a * c
    )


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest |values|, largest first (ties by index)."""
    order = np.lexsort((np.arange(len(values)), -np.abs(values)))
    return order[:k]


def dfa_rows(
    model: Any,
    sae: Any,
    tokens: torch.Tensor,
    read: int,
    settings: DfaSettings,
    resid_sae: Any | None = None,
    resid_layer: int | None = None,
) -> dict[str, dict[str, list]]:
    """DFA of one prompt's attention features at ``read``, as rows of ``dfa_features`` and
    ``dfa_parts`` (without run_id / prompt_id). What the sweep (or `featuregraph dfa`) calls per prompt.

    Per feature, the ``dfa`` rows (top-k head-source parts, 'rest', 'encoder_bias',
    'decoder_bias') sum to its pre-activation; for each recursed head-source part the
    ``dfa_resid`` rows (top residual features, 'rest', 'error', 'decoder_bias', 'bias') sum to that part.
    """
    layer = check_attention_sae(model, sae)
    cache = attention_cache(model, tokens, layer)
    found = attention_dfa(model, sae, cache, read, limit=settings.max_features)
    pieces = (
        resid_pieces(resid_sae, cache.resid) if resid_sae is not None and settings.recurse and found else None
    )
    feats: dict[str, list] = {c: [] for c in value_columns("dfa_features")}
    parts: dict[str, list] = {c: [] for c in value_columns("dfa_parts")}

    def part(feature: int, method: str, term: str, value: float, head=None, source=None, up=None) -> None:
        for col, val in zip(
            parts,
            (layer, feature, method, term, head, source, resid_layer if up is not None else None, up, value),
            strict=True,
        ):
            parts[col].append(val)

    n_pos = cache.pattern.shape[-1]
    for f in found:
        code = encode_feature("attn_z", f.index)
        for col, val in zip(
            feats,
            (layer, code, read, f.activation, f.pre_activation, resid_layer if pieces else None),
            strict=True,
        ):
            feats[col].append(val)
        flat = f.parts.reshape(-1)
        top = _top(flat, settings.top_k)
        for k in top:
            part(code, "dfa", "head_source", float(flat[k]), int(k // n_pos), int(k % n_pos))
        part(code, "dfa", "rest", float(flat.sum() - flat[top].sum()))
        part(code, "dfa", "encoder_bias", f.encoder_bias)
        part(code, "dfa", "decoder_bias", f.decoder_bias)
        if pieces is None:
            continue
        for k in top[: settings.recurse]:
            split = resid_split(model, sae, cache, pieces, f, read, int(k // n_pos), int(k % n_pos))
            f.splits.append(split)
            h, s = split.head, split.source
            best = _top(split.values, settings.resid_top_k)
            for j in best:
                part(code, "dfa_resid", "feature", float(split.values[j]), h, s, int(split.features[j]))
            part(code, "dfa_resid", "rest", float(split.values.sum() - split.values[best].sum()), h, s)
            for term in ("error", "decoder_bias", "bias"):
                part(code, "dfa_resid", term, getattr(split, term), h, s)
    return {"dfa_features": feats, "dfa_parts": parts}


__all__ = [
    "ARCHITECTURES", "AttentionCache", "DfaSettings", "FeatureDfa", "ResidPieces", "ResidSplit", "attention_cache",
    "attention_dfa", "check_attention_sae", "dfa_rows", "encoder_columns", "hook_z_layer", "resid_pieces", "resid_split",
]  # fmt: skip
