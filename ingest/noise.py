"""Cross-context noise baselines (docs/method.md#cross-context-noise, docs/experiments.md).

Features of a run are ablated in N contexts unrelated to its prompts (snippets of a corpus),
with the sweep's own ablation code, and what they do there is summarised:

- per feature: how often it is active at all, and the size of its strongest edges and logit
  effects when it is (``noise_features``);
- per edge of the run: its weight over all N contexts, 0 where the upstream feature is inactive
  (``noise_edges``), and likewise per (feature, token) of the run's logit effects (``noise_logits``).

An in-context effect is then read against this floor: ``z = (w - mean) / max(std, floor)`` and
``|w| / p95(|w|)`` (views ``edge_snr`` and ``logit_snr``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from featuregraph.errors import InputError
from featuregraph.ingest.prompts import RawPrompt
from featuregraph.ingest.reload import RunContext
from featuregraph.ingest.sweep import PromptInput
from featuregraph.store.tables import value_columns


@dataclass(frozen=True)
class NoiseSpec:
    """Settings of a noise experiment, stored verbatim in ``experiments.spec``.

    Attributes:
        corpus: where the contexts came from.
        n_contexts: contexts sampled (without replacement) from the corpus.
        context_tokens: tokens kept per context (after BOS); longer snippets are cut.
        seed: sampling seed.
        features: ``"L.F"`` names ablated; empty means every feature in the run's edges.
    """

    corpus: str
    n_contexts: int = 200
    context_tokens: int = 32
    seed: int = 0
    features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n_contexts < 2:
            raise InputError(f"n_contexts must be >= 2, got {self.n_contexts}")
        if self.context_tokens < 1:
            raise InputError(f"context_tokens must be >= 1, got {self.context_tokens}")


def sample_contexts(ctx: RunContext, corpus: list[RawPrompt], spec: NoiseSpec) -> list[PromptInput]:
    """``n_contexts`` corpus snippets, tokenized like the run's prompts and cut to length."""
    rng = random.Random(spec.seed)
    order = list(range(len(corpus)))
    rng.shuffle(order)
    tok = ctx.loaded.model.tokenizer
    bos = [tok.bos_token_id] if ctx.loaded.prepend_bos else []
    limit = min(spec.context_tokens, int(ctx.loaded.model.cfg.n_ctx) - len(bos))
    out: list[PromptInput] = []
    for i in order:
        ids = tok.encode(corpus[i].text, add_special_tokens=False)[:limit]
        if not ids:
            continue
        out.append(PromptInput(len(out), tok.decode(ids), bos + ids))
        if len(out) == spec.n_contexts:
            break
    if len(out) < 2:
        raise InputError(f"{spec.corpus}: fewer than 2 usable contexts")
    return out


def _padded(groups: dict[int, list[int]], n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row r -> its list of ids, as a padded [n_rows, width] tensor and a validity mask."""
    width = max((len(v) for v in groups.values()), default=0) or 1
    ids = torch.zeros(n_rows, width, dtype=torch.long)
    valid = torch.zeros(n_rows, width, dtype=torch.bool)
    for r, values in groups.items():
        ids[r, : len(values)] = torch.tensor(values)
        valid[r, : len(values)] = True
    return ids, valid


def _stats_with_zeros(group: np.ndarray, values: np.ndarray, n_groups: int, n_total: int):
    """Per group: (n_active, mean, std, p95 of |v|) over ``n_total`` samples, the missing ones 0."""
    n_active = np.bincount(group, minlength=n_groups)
    s1 = np.bincount(group, weights=values, minlength=n_groups)
    s2 = np.bincount(group, weights=values * values, minlength=n_groups)
    mean = s1 / n_total
    std = np.sqrt(np.maximum(s2 / n_total - mean * mean, 0.0))
    p95 = np.zeros(n_groups)
    order = np.lexsort((np.abs(values), group))
    g_sorted, a_sorted = group[order], np.abs(values)[order]
    starts = np.searchsorted(g_sorted, np.arange(n_groups))
    pos = 0.95 * (n_total - 1)
    lo, hi, frac = int(np.floor(pos)), int(np.ceil(pos)), pos - np.floor(pos)
    for g in np.nonzero(n_active)[0]:
        zeros = n_total - n_active[g]
        vals = a_sorted[starts[g] : starts[g] + n_active[g]]

        def at(i: int) -> float:
            return 0.0 if i < zeros else float(vals[i - zeros])

        p95[g] = at(lo) * (1 - frac) + at(hi) * frac
    return n_active, mean, std, p95


def _moments(values: list[np.ndarray]) -> tuple[float | None, float | None, float | None]:
    if not values:
        return None, None, None
    v = np.concatenate(values)
    return float(v.mean()), float(v.std()), float(np.quantile(v, 0.95))


@torch.no_grad()
def noise_baseline(
    ctx: RunContext,
    contexts: list[PromptInput],
    features: list[tuple[int, int]],
    edge_targets: np.ndarray,
    logit_targets: np.ndarray,
    edge_floor: float,
    prompts_per_forward: int = 8,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """Ablate ``features`` in ``contexts``; return the noise tables' columns.

    ``edge_targets`` [n, 4] are the (up_layer, up_feature, down_layer, down_feature) edges and
    ``logit_targets`` [m, 3] the (layer, feature, token_id) logit effects whose distributions
    are wanted.
    """
    sweeper = ctx.sweeper()
    cfg = sweeper.config
    sites = ctx.loaded.sites
    dev = sweeper.device
    n_total = len(contexts)
    chosen = {k: sorted({f for (layer, f) in features if layer == s.layer}) for k, s in enumerate(sites)}

    # Per site: compact row of each chosen feature, and the targets each row tracks.
    plan = []
    for k, site in enumerate(sites):
        row_of = torch.full((site.d_sae,), -1, dtype=torch.long)
        row_of[chosen[k]] = torch.arange(len(chosen[k]))
        e_groups: dict[int, list[int]] = {}
        e_pairs: dict[int, list[int]] = {}
        nxt = sites[k + 1] if k + 1 < len(sites) else None
        for i, (ul, uf, dl, df) in enumerate(edge_targets.tolist()):
            if ul == site.layer and nxt is not None and dl == nxt.layer and row_of[uf] >= 0:
                e_groups.setdefault(int(row_of[uf]), []).append(df)
                e_pairs.setdefault(int(row_of[uf]), []).append(i)
        l_groups: dict[int, list[int]] = {}
        l_pairs: dict[int, list[int]] = {}
        for i, (layer, f, t) in enumerate(logit_targets.tolist()):
            if layer == site.layer and row_of[f] >= 0:
                l_groups.setdefault(int(row_of[f]), []).append(t)
                l_pairs.setdefault(int(row_of[f]), []).append(i)
        e_ids, e_valid = _padded(e_groups, len(chosen[k]))
        e_pid, _ = _padded(e_pairs, len(chosen[k]))
        l_ids, l_valid = _padded(l_groups, len(chosen[k]))
        l_pid, _ = _padded(l_pairs, len(chosen[k]))
        plan.append(
            {
                "row_of": row_of.to(dev),
                "e": (e_ids.to(dev), e_valid.to(dev), e_pid.to(dev)),
                "l": (l_ids.to(dev), l_valid.to(dev), l_pid.to(dev)),
            }
        )

    feat_rows: list[tuple[int, torch.Tensor]] = []  # (site, rows) per batch
    edge_abs: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    dprob_abs: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    e_samples: list[tuple[torch.Tensor, torch.Tensor]] = []
    l_samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    groups = [contexts[i : i + prompts_per_forward] for i in range(0, n_total, prompts_per_forward)]
    for group in tqdm(groups, unit="group", disable=not progress, desc="noise"):
        clean = sweeper.clean_pass(group)
        clean_p = clean.logp.exp()
        for k, site in enumerate(sites):
            if not chosen[k]:
                continue
            masked = sweeper.ablatable(clean, k, site.sae.encode(clean.resid[site.layer]))
            pairs = (masked != 0).any(1).nonzero()
            rows = plan[k]["row_of"][pairs[:, 1]]
            pairs, rows = pairs[rows >= 0], rows[rows >= 0]
            for start in range(0, pairs.shape[0], cfg.batch_size):
                pb, fb = pairs[start : start + cfg.batch_size, 0], pairs[start : start + cfg.batch_size, 1]
                rb = rows[start : start + cfg.batch_size]
                down, logp = sweeper.ablate(clean, k, pb, fb, masked[pb, :, fb], cfg.coefficient - 1.0)
                feat_rows.append((k, rb))
                if down is not None:
                    w = down - clean.read_acts[k + 1][pb]
                    edge_abs.append((k, rb, w.abs().topk(min(cfg.edge_top_k, w.shape[-1]), -1).values))
                    ids, valid, pid = (t[rb] for t in plan[k]["e"])
                    e_samples.append((pid[valid], w.gather(-1, ids)[valid]))
                dprob = logp.exp() - clean_p[pb]
                kk = min(cfg.logit_top_k, dprob.shape[-1] // 2)
                top = torch.cat([dprob.topk(kk, -1).values, (-dprob).topk(kk, -1).values], -1).abs()
                dprob_abs.append((k, rb, top))
                ids, valid, pid = (t[rb] for t in plan[k]["l"])
                dlogp = logp - clean.logp[pb]
                l_samples.append((pid[valid], dprob.gather(-1, ids)[valid], dlogp.gather(-1, ids)[valid]))

    # -- per feature ------------------------------------------------------------------
    cols: dict[str, list] = {k: [] for k in value_columns("noise_features")}
    active = {k: np.zeros(len(chosen[k]), np.int64) for k in range(len(sites))}
    for k, rb in feat_rows:
        np.add.at(active[k], rb.cpu().numpy(), 1)
    per_edge = {k: {} for k in range(len(sites))}
    for k, rb, vals in edge_abs:
        for r, v in zip(rb.cpu().numpy(), vals.float().cpu().numpy()):
            per_edge[k].setdefault(int(r), []).append(v)
    per_logit = {k: {} for k in range(len(sites))}
    for k, rb, vals in dprob_abs:
        for r, v in zip(rb.cpu().numpy(), vals.float().cpu().numpy()):
            per_logit[k].setdefault(int(r), []).append(v)
    for k, site in enumerate(sites):
        for r, f in enumerate(chosen[k]):
            em, es, ep = _moments(per_edge[k].get(r, []))
            dm, ds, dp = _moments(per_logit[k].get(r, []))
            for name, value in zip(cols, (site.layer, f, n_total, int(active[k][r]), em, es, ep, dm, ds, dp)):
                cols[name].append(value)
    # Column types come from the table spec (store/tables.py) when the rows are written.
    tables: dict[str, dict[str, np.ndarray]] = {
        # float: a missing moment (None) becomes NaN, stored as NULL
        "noise_features": {c: np.array(v, dtype=float if c.endswith(MOMENTS) else None) for c, v in cols.items()},
        "noise_contexts": {
            "context_id": np.array([c.prompt_id for c in contexts]),
            "text": np.array([c.text for c in contexts], dtype=object),
            "n_tokens": np.array([len(c.token_ids) for c in contexts]),
        },
    }

    # -- per edge and per (feature, token) ---------------------------------------------
    pid = torch.cat([p for p, _ in e_samples]).cpu().numpy() if e_samples else np.empty(0, np.int64)
    val = torch.cat([v for _, v in e_samples]).double().cpu().numpy() if e_samples else np.empty(0)
    n_act, mean, std, p95 = _stats_with_zeros(pid, val, len(edge_targets), n_total)
    # Every edge of a baselined feature gets a row, even if the feature never fired: its noise is all zeros.
    chosen_set = set(features)
    keep = np.array([(int(a), int(b)) in chosen_set for a, b in edge_targets[:, :2]], dtype=bool).reshape(-1)
    t = edge_targets[keep]
    tables["noise_edges"] = {
        "up_layer": t[:, 0],
        "up_feature": t[:, 1],
        "down_layer": t[:, 2],
        "down_feature": t[:, 3],
        "n": np.full(len(t), n_total),
        "n_active": n_act[keep],
        "mean": mean[keep],
        "std": std[keep],
        "abs_p95": p95[keep],
        "z_scale": np.maximum(std[keep], edge_floor),
    }
    pid = torch.cat([p for p, _, _ in l_samples]).cpu().numpy() if l_samples else np.empty(0, np.int64)
    dp = torch.cat([v for _, v, _ in l_samples]).double().cpu().numpy() if l_samples else np.empty(0)
    dl = torch.cat([v for _, _, v in l_samples]).double().cpu().numpy() if l_samples else np.empty(0)
    n_act, mean, std, p95 = _stats_with_zeros(pid, dp, len(logit_targets), n_total)
    _, lmean, lstd, _ = _stats_with_zeros(pid, dl, len(logit_targets), n_total)
    keep = np.array([(int(a), int(b)) in chosen_set for a, b in logit_targets[:, :2]], dtype=bool).reshape(-1)
    t = logit_targets[keep]
    tables["noise_logits"] = {
        "layer": t[:, 0],
        "feature": t[:, 1],
        "token_id": t[:, 2],
        "n": np.full(len(t), n_total),
        "n_active": n_act[keep],
        "dprob_mean": mean[keep],
        "dprob_std": std[keep],
        "dprob_abs_p95": p95[keep],
        "dlogp_mean": lmean[keep],
        "dlogp_std": lstd[keep],
        "z_scale": np.maximum(std[keep], LOGIT_STD_FLOOR),
    }
    return tables


# The smallest dprob spread a z-score divides by: below float32 resolution of probabilities.
LOGIT_STD_FLOOR = 1e-6
# noise_features columns that hold a moment of a distribution (None when the feature never fired).
MOMENTS = ("_mean", "_std", "_p95")
