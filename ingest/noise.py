"""Cross-context noise baselines with calibrated p-values (docs/experiments.md, "Cross-context noise").

Features of a run are ablated in contexts unrelated to its prompts, with the sweep's own ablation
code. One forward per (context, feature) is read at every position t: by causality, position t is
exactly what the sweep would record for the context cut after t, so each context gives one sample
per read position at or after the feature's first activation (and after ``min_read_position``).

Per sample we keep:

- the ablation's largest effect on any downstream feature, ``max_j |w_j|`` (and on any token,
  ``max_t |dprob_t|``): the *null* of the stored, top-k-selected in-context effects. An in-context
  edge of |weight| x gets ``p = (1 + #{samples with max >= x}) / (1 + n_samples)``. For the edge
  an ablation ranks first this is an exact conformal p-value when the prompt is exchangeable with
  the noise contexts; for lower-ranked edges it is conservative. It accounts for the selection: a
  stored edge is a maximum over thousands of downstream features, not a random draw.
- the effect on every downstream feature (token) an in-context edge (logit effect) of the feature
  reaches, zeros included, summarised per pair (mean, std, p95 of |w|) for z-scores.

A feature that never fires in the contexts has no natural null (``n_samples = 0``, p NULL). With
``inject_inactive`` such features are instead *added* at their typical in-context activation to
the contexts and removed again (the method's seed did this), and their null is marked ``injected``.
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
from featuregraph.ingest.sweep import CleanPass, PromptInput
from featuregraph.store.tables import value_columns

LEGACY_FEATURE_COLUMNS = (
    "edge_abs_mean", "edge_abs_std", "edge_abs_p95", "dprob_abs_mean", "dprob_abs_std", "dprob_abs_p95",
)  # fmt: skip
# Elements of one [rows, pos, d_vocab] block of log-probabilities: bounds memory at GPT-2's vocabulary.
_LOGIT_BLOCK = 1 << 25


@dataclass(frozen=True)
class NoiseSpec:
    """Settings of a noise experiment, stored verbatim in ``experiments.spec``.

    Attributes:
        corpus: where the contexts came from.
        n_contexts: contexts sampled (without replacement) from the corpus.
        context_tokens: tokens kept per context (after BOS); longer snippets are cut.
        seed: sampling seed (contexts and the thinning of samples).
        features: ``"L.F"`` names ablated; empty means every feature in the run's edges.
        min_read_position: earliest position read (0 is BOS when there is one); shorter prefixes
            are less like real prompts.
        max_samples: samples kept per feature for its null (a seeded random subset beyond this).
        inject_inactive: give features that never fire in the contexts an injected null.
        exclude_run_prompts: skip corpus texts that are prompts of the run or start with one, so
            the prompts being tested are never part of their own baseline.
    """

    corpus: str
    n_contexts: int = 200
    context_tokens: int = 32
    seed: int = 0
    features: tuple[str, ...] = ()
    min_read_position: int = 3
    max_samples: int = 2000
    inject_inactive: bool = False
    exclude_run_prompts: bool = True

    def __post_init__(self) -> None:
        if self.n_contexts < 2:
            raise InputError(f"n_contexts must be >= 2, got {self.n_contexts}")
        if self.context_tokens < 1:
            raise InputError(f"context_tokens must be >= 1, got {self.context_tokens}")
        if self.min_read_position < 0:
            raise InputError(f"min_read_position must be >= 0, got {self.min_read_position}")
        if self.max_samples < 10:
            raise InputError(f"max_samples must be >= 10, got {self.max_samples}")


def sample_contexts(
    ctx: RunContext, corpus: list[RawPrompt], spec: NoiseSpec, exclude_texts: frozenset[str] = frozenset()
) -> list[PromptInput]:
    """``n_contexts`` corpus snippets, tokenized like the run's prompts and cut to length."""
    rng = random.Random(spec.seed)
    order = list(range(len(corpus)))
    rng.shuffle(order)
    tok = ctx.loaded.model.tokenizer
    bos = [tok.bos_token_id] if ctx.loaded.prepend_bos else []
    limit = min(spec.context_tokens, int(ctx.loaded.model.cfg.n_ctx) - len(bos))
    out: list[PromptInput] = []
    for i in order:
        if _overlaps(corpus[i].text, exclude_texts):
            continue
        ids = tok.encode(corpus[i].text, add_special_tokens=False)[:limit]
        if not ids:
            continue
        out.append(PromptInput(len(out), tok.decode(ids), bos + ids))
        if len(out) == spec.n_contexts:
            break
    if len(out) < 2:
        raise InputError(f"{spec.corpus}: fewer than 2 usable contexts")
    return out


def _overlaps(text: str, prompts: frozenset[str]) -> bool:
    """Whether ``text`` is a run prompt or starts with one (a prompt cut from it is not unrelated)."""
    return text in prompts or any(text.startswith(p) for p in prompts)


def _pair_stats(acc: np.ndarray, n_samples: np.ndarray, last_pair: np.ndarray, last_vals: np.ndarray, n_last: np.ndarray):
    """Per pair: (n_nonzero, mean, std, p95 of |v|), zeros included.

    ``acc`` [pairs, 3] holds the sums of v, v^2 and of (v != 0) over all of the pair's feature's
    ``n_samples``; the p95 is over one sample per context (the last read position), ``n_last``
    per pair, of which ``last_pair`` / ``last_vals`` are the nonzero-or-not observed ones.
    """
    n = np.maximum(n_samples, 1).astype(float)
    mean = acc[:, 0] / n
    std = np.sqrt(np.maximum(acc[:, 1] / n - mean * mean, 0.0))
    p95 = np.zeros(len(acc))
    order = np.lexsort((np.abs(last_vals), last_pair))
    p_sorted, a_sorted = last_pair[order], np.abs(last_vals)[order]
    starts = np.searchsorted(p_sorted, np.arange(len(acc) + 1))
    for g in np.nonzero(n_last)[0]:
        vals = a_sorted[starts[g] : starts[g + 1]]
        full = np.concatenate([np.zeros(max(int(n_last[g]) - len(vals), 0)), vals])
        p95[g] = float(np.quantile(full, 0.95)) if len(full) else 0.0
    return acc[:, 2].astype(np.int64), mean, std, p95


class _PairAcc:
    """Running sums per tracked pair (memory independent of the number of samples), and one
    sample per context for the pairs' 95th percentiles."""

    def __init__(self, n_edges: int, n_logits: int, dev):
        self.edge = torch.zeros(n_edges, 3, dtype=torch.float64, device=dev)  # sum v, v^2, nonzero
        self.logit = torch.zeros(n_logits, 5, dtype=torch.float64, device=dev)  # dprob: sum, sq, nz; dlogp: sum, sq
        self.edge_last: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.logit_last: list[tuple[torch.Tensor, torch.Tensor]] = []

    @staticmethod
    def add(acc: torch.Tensor, pid: torch.Tensor, *values: torch.Tensor) -> None:
        cols = []
        for v in values:
            v = v.double()
            cols += [v, v * v]
        cols.insert(2, (values[0] != 0).double())
        acc.index_add_(0, pid, torch.stack(cols[: acc.shape[1]], -1))


@dataclass
class _Samples:
    """Everything gathered for one site's features over all contexts (lists of device tensors)."""

    rows: list[torch.Tensor]  # feature row of each sample
    injected: list[torch.Tensor]  # whether the sample comes from injection
    edge_max: list[torch.Tensor]
    logit_max: list[torch.Tensor]
    last_rows: list[torch.Tensor]  # feature row of each context's last sample
    pairs: _PairAcc


def _positions_read(clean: CleanPass, prompt_idx: torch.Tensor, removed: torch.Tensor, min_pos: int) -> torch.Tensor:
    """[rows, pos]: read positions that give a sample: at or after the feature's first ablated
    position, at or after ``min_pos``, and inside the context."""
    n_pos = removed.shape[1]
    pos = torch.arange(n_pos, device=removed.device)[None]
    started = (removed != 0).cumsum(1) > 0
    length = torch.tensor(clean.lengths, device=removed.device)[prompt_idx][:, None]
    return started & (pos >= min_pos) & (pos < length)


@torch.no_grad()
def noise_baseline(
    ctx: RunContext,
    contexts: list[PromptInput],
    features: list[tuple[int, int]],
    edge_targets: np.ndarray,
    logit_targets: np.ndarray,
    spec: NoiseSpec,
    typical: dict[tuple[int, int], float] | None = None,
    prompts_per_forward: int = 8,
    progress: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """Ablate ``features`` in ``contexts``; return the noise tables' columns.

    ``edge_targets`` [n, 4] are the run's (up_layer, up_feature, down_layer, down_feature) edges
    and ``logit_targets`` [m, 3] its (layer, feature, token_id) logit effects, whose per-pair
    distributions are wanted. ``typical`` maps a feature to its typical in-context activation,
    used to inject features that never fire here (``spec.inject_inactive``).
    """
    sweeper = ctx.sweeper()
    cfg = sweeper.config
    sites = ctx.loaded.sites
    dev = sweeper.device
    chosen = {k: sorted({f for (layer, f) in features if layer == s.layer}) for k, s in enumerate(sites)}
    plan = [_site_plan(k, sites, chosen[k], edge_targets, logit_targets, dev) for k in range(len(sites))]
    pairs = _PairAcc(len(edge_targets), len(logit_targets), dev)
    samples = [_Samples([], [], [], [], [], pairs) for _ in sites]
    groups = [contexts[i : i + prompts_per_forward] for i in range(0, len(contexts), prompts_per_forward)]
    scale = cfg.coefficient - 1.0
    # Contexts in which each chosen feature fires at an ablatable position (natural samples only).
    active = {k: np.zeros(len(chosen[k]), np.int64) for k in range(len(sites))}
    for group in tqdm(groups, unit="group", disable=not progress, desc="noise"):
        clean = sweeper.clean_pass(group)
        clean_logp = _clean_log_probs(sweeper, clean)
        clean_down = [site.sae.encode(clean.resid[site.layer]) for site in sites]
        for k, site in enumerate(sites):
            if not chosen[k]:
                continue
            masked = clean.ablate_mask[..., None] * clean_down[k]  # the site's clean code, encoded once
            pairs = (masked != 0).any(1).nonzero()
            rows = plan[k]["row_of"][pairs[:, 1]]
            pairs, rows = pairs[rows >= 0], rows[rows >= 0]
            active[k] += np.bincount(rows.cpu().numpy(), minlength=len(chosen[k]))
            for start in range(0, pairs.shape[0], cfg.batch_size):
                pb, fb = pairs[start : start + cfg.batch_size, 0], pairs[start : start + cfg.batch_size, 1]
                removed = masked[pb, :, fb]
                down, logp = sweeper.ablate(clean, k, pb, fb, removed, scale, every_position=True)
                valid = _positions_read(clean, pb, removed, spec.min_read_position)
                w = None if down is None else down - clean_down[k + 1][pb]
                _collect(samples[k], plan[k], rows[start : start + cfg.batch_size], valid, w, logp, clean_logp[pb], False)
    natural = _count_rows(samples, chosen)
    if spec.inject_inactive:
        _inject(sweeper, groups, sites, chosen, plan, samples, natural, typical or {}, spec, progress)
    return _tables(ctx, contexts, chosen, active, samples, plan, edge_targets, logit_targets, spec)


def _site_plan(k, sites, chosen_k, edge_targets, logit_targets, dev) -> dict:
    """Compact row of each chosen feature of site k, and the downstream targets each row tracks
    (padded [rows, width] tensors of target ids, validity and index into the target arrays)."""
    site = sites[k]
    row_of = np.full(site.d_sae, -1, np.int64)
    row_of[chosen_k] = np.arange(len(chosen_k))
    nxt = sites[k + 1] if k + 1 < len(sites) else None
    et, lt = edge_targets.reshape(-1, 4), logit_targets.reshape(-1, 3)
    e_sel = (et[:, 0] == site.layer) & (et[:, 2] == (nxt.layer if nxt is not None else -1))
    l_sel = lt[:, 0] == site.layer
    return {
        "row_of_np": row_of,
        "row_of": torch.from_numpy(row_of).to(dev),
        "e": _grouped(row_of, np.nonzero(e_sel)[0], et[:, 1], et[:, 3], len(chosen_k), dev),
        "l": _grouped(row_of, np.nonzero(l_sel)[0], lt[:, 1], lt[:, 2], len(chosen_k), dev),
    }


def _grouped(row_of: np.ndarray, idx: np.ndarray, up: np.ndarray, target: np.ndarray, n_rows: int, dev):
    """For target rows ``idx`` (upstream feature ``up``, target id ``target``): per chosen feature
    row, its target ids, a validity mask and the targets' indices, padded to the widest row."""
    rows = row_of[up[idx]]
    keep = rows >= 0
    idx, rows = idx[keep], rows[keep]
    order = np.argsort(rows, kind="stable")
    idx, rows = idx[order], rows[order]
    counts = np.bincount(rows, minlength=n_rows)
    width = int(counts.max()) if len(counts) and counts.max() > 0 else 1
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_rows else np.zeros(0, np.int64)
    col = np.arange(len(rows)) - starts[rows] if len(rows) else np.zeros(0, np.int64)
    ids = np.zeros((n_rows, width), np.int64)
    valid = np.zeros((n_rows, width), bool)
    pid = np.zeros((n_rows, width), np.int64)
    ids[rows, col] = target[idx]
    valid[rows, col] = True
    pid[rows, col] = idx
    return tuple(torch.from_numpy(a).to(dev) for a in (ids, valid, pid))


def _clean_log_probs(sweeper, clean: CleanPass) -> torch.Tensor:
    """Clean next-token log-probabilities at every position [contexts, pos, d_vocab]."""
    return sweeper.log_probs_every_position(clean.resid[sweeper.n_layers])


def _collect(s: _Samples, plan: dict, rows, valid, w, logp, clean_logp, injected: bool) -> None:
    """Reduce one batch of every-position ablations to its samples (on the device)."""
    b_idx, t_idx = valid.nonzero(as_tuple=True)
    r = rows[b_idx]
    s.rows.append(r)
    s.injected.append(torch.full_like(r, int(injected)))
    pos = torch.arange(valid.shape[1], device=valid.device)[None]
    last_t = torch.where(valid, pos, -1).amax(1)
    is_last = t_idx == last_t[b_idx]
    s.last_rows.append(r[is_last])
    if w is not None:
        wv = w[b_idx, t_idx]  # [samples, d_down]
        s.edge_max.append(wv.abs().amax(-1))
        ids, ok, pid = (x[r] for x in plan["e"])
        vals = wv.gather(-1, ids)
        _PairAcc.add(s.pairs.edge, pid[ok], vals[ok])
        s.pairs.edge_last.append((pid[is_last][ok[is_last]], vals[is_last][ok[is_last]]))
    else:
        s.edge_max.append(torch.full(r.shape, float("nan"), device=r.device))
    # dprob over the vocabulary, in blocks so GPT-2-sized vocabularies stay within memory.
    n, vocab = b_idx.shape[0], logp.shape[-1]
    step = max(1, _LOGIT_BLOCK // max(vocab, 1))
    ids, ok, pid = (x[r] for x in plan["l"])
    for a in range(0, n, step):
        sl = slice(a, a + step)
        lp, clp = logp[b_idx[sl], t_idx[sl]].float(), clean_logp[b_idx[sl], t_idx[sl]].float()
        dprob = lp.exp() - clp.exp()
        s.logit_max.append(dprob.abs().amax(-1))
        dlogp = lp - clp
        o = ok[sl]
        dp, dl = dprob.gather(-1, ids[sl]), dlogp.gather(-1, ids[sl])
        _PairAcc.add(s.pairs.logit, pid[sl][o], dp[o], dl[o])
        last = is_last[sl]
        s.pairs.logit_last.append((pid[sl][last][o[last]], dp[last][o[last]]))


def _count_rows(samples: list[_Samples], chosen: dict[int, list[int]]) -> dict[int, np.ndarray]:
    out = {}
    for k, s in enumerate(samples):
        rows = torch.cat(s.rows).cpu().numpy() if s.rows else np.empty(0, np.int64)
        out[k] = np.bincount(rows, minlength=len(chosen[k]))
    return out


def _inject(sweeper, groups, sites, chosen, plan, samples, natural, typical, spec, progress) -> None:
    """Null by injection for features with no natural sample: add the feature at its typical
    in-context activation at every ablatable position, then remove it; ablated minus clean, where
    "clean" is the context with the feature added."""
    todo = {
        k: [(r, f) for r, f in enumerate(chosen[k]) if natural[k][r] == 0 and typical.get((sites[k].layer, f), 0) > 0]
        for k in range(len(sites))
    }
    if not any(todo.values()):
        return
    cfg = sweeper.config
    dev = sweeper.device
    for group in tqdm(groups, unit="group", disable=not progress, desc="noise (injected)"):
        clean = sweeper.clean_pass(group)
        base_logp = _clean_log_probs(sweeper, clean)
        base_down = [site.sae.encode(clean.resid[site.layer]) for site in sites]
        n_ctx = len(group)
        mask = clean.ablate_mask.to(base_logp.dtype)
        for k, todo_k in todo.items():
            items = [(c, r, f) for c in range(n_ctx) for r, f in todo_k]
            for start in range(0, len(items), cfg.batch_size):
                chunk = items[start : start + cfg.batch_size]
                pb = torch.tensor([c for c, _, _ in chunk], device=dev)
                fb = torch.tensor([f for _, _, f in chunk], device=dev)
                rb = torch.tensor([r for _, r, _ in chunk], device=dev)
                amount = torch.tensor([typical[(sites[k].layer, f)] for _, _, f in chunk], device=dev, dtype=mask.dtype)
                added = mask[pb] * amount[:, None]
                # scale +1 adds the feature; the injected run is "clean", the plain context "ablated".
                down, logp = sweeper.ablate(clean, k, pb, fb, added, 1.0, every_position=True)
                valid = _positions_read(clean, pb, added, spec.min_read_position)
                w = None if down is None else base_down[k + 1][pb] - down
                _collect(samples[k], plan[k], rb, valid, w, base_logp[pb], logp, True)


def _thin(values: np.ndarray, cap: int, seed: int) -> np.ndarray:
    if len(values) <= cap:
        return values
    return np.random.default_rng(seed).choice(values, cap, replace=False)


def _null_rows(layer: int, feature: int, kind: str, values: np.ndarray, out: dict[str, list]) -> None:
    """Sorted null values with ``n_ge`` = how many samples are >= each (ties share the count)."""
    v = np.sort(values.astype(np.float32))
    n_ge = len(v) - np.searchsorted(v, v, side="left")
    out["layer"].append(np.full(len(v), layer, np.int16))
    out["feature"].append(np.full(len(v), feature, np.int32))
    out["kind"].append(np.full(len(v), kind, dtype=object))
    out["value"].append(v)
    out["n_ge"].append(n_ge.astype(np.int32))


def _tables(ctx, contexts, chosen, active, samples, plan, edge_targets, logit_targets, spec) -> dict[str, dict[str, np.ndarray]]:
    sites = ctx.loaded.sites
    feat_cols: dict[str, list] = {c: [] for c in (
        "layer", "feature", "n_contexts", "n_active", "n_samples", "null_mode",
        "edge_max_median", "edge_max_p95", "logit_max_median", "logit_max_p95",
    )}  # fmt: skip
    null: dict[str, list] = {c: [] for c in ("layer", "feature", "kind", "value", "n_ge")}
    n_samples_edge = np.zeros(len(edge_targets), np.int64)
    n_samples_logit = np.zeros(len(logit_targets), np.int64)
    n_last_edge = np.zeros(len(edge_targets), np.int64)
    n_last_logit = np.zeros(len(logit_targets), np.int64)
    for k, site in enumerate(sites):
        s = samples[k]
        if not chosen[k]:
            continue

        def cat(parts, dtype=np.float64):
            return torch.cat(parts).double().cpu().numpy().astype(dtype) if parts else np.empty(0, dtype)

        rows = cat(s.rows, np.int64)
        inj = cat(s.injected, np.int64)
        emax, lmax = cat(s.edge_max), cat(s.logit_max)
        # One stable sort groups the samples by feature row, keeping their order within a row.
        order = np.argsort(rows, kind="stable")
        bounds = np.searchsorted(rows[order], np.arange(len(chosen[k]) + 1))
        for r, f in enumerate(chosen[k]):
            sel = order[bounds[r] : bounds[r + 1]]
            n = len(sel)
            mode = None if n == 0 else ("injected" if inj[sel].any() else "natural")
            seed = spec.seed * 1_000_003 + site.layer * 100_003 + f
            e = _thin(emax[sel], spec.max_samples, seed)
            lg = _thin(lmax[sel], spec.max_samples, seed)
            e = e[~np.isnan(e)]
            if len(e):
                _null_rows(site.layer, f, "edge", e, null)
            if len(lg):
                _null_rows(site.layer, f, "logit", lg, null)
            values = (
                site.layer, f, len(contexts), 0, min(n, spec.max_samples), mode,
                _q(e, 0.5), _q(e, 0.95), _q(lg, 0.5), _q(lg, 0.95),
            )  # fmt: skip
            for c, v in zip(feat_cols, values, strict=True):
                feat_cols[c].append(v)
        # A pair's samples are all of its upstream feature's samples (zeros where it did not move).
        per_row = np.bincount(rows, minlength=len(chosen[k]))
        last_row = np.bincount(cat(s.last_rows, np.int64), minlength=len(chosen[k]))
        row_of = plan[k]["row_of_np"]
        for targets, n_all, n_last in ((edge_targets, n_samples_edge, n_last_edge), (logit_targets, n_samples_logit, n_last_logit)):
            t = targets.reshape(len(targets), -1)
            at_site = np.nonzero(t[:, 0] == site.layer)[0] if len(t) else np.zeros(0, np.int64)
            r = row_of[t[at_site, 1]] if len(at_site) else np.zeros(0, np.int64)
            ok = r >= 0
            n_all[at_site[ok]] = per_row[r[ok]]
            n_last[at_site[ok]] = last_row[r[ok]]
    feat_cols["n_active"] = [int(n) for k in sorted(chosen) if chosen[k] for n in active[k]]
    n_feat = len(feat_cols["layer"])
    # The per-feature columns from before migration 0008 stay NULL: the null below replaces them.
    legacy = {c: np.full(n_feat, np.nan, np.float32) for c in LEGACY_FEATURE_COLUMNS}
    tables: dict[str, dict[str, np.ndarray]] = {
        "noise_features": {
            **legacy,
            "layer": np.array(feat_cols["layer"], np.int16),
            "feature": np.array(feat_cols["feature"], np.int32),
            "n_contexts": np.array(feat_cols["n_contexts"], np.int32),
            "n_active": np.array(feat_cols["n_active"], np.int32),
            "n_samples": np.array(feat_cols["n_samples"], np.int32),
            "null_mode": np.array(feat_cols["null_mode"], dtype=object),
            **{c: np.array(feat_cols[c], dtype=np.float64).astype(np.float32) for c in list(feat_cols)[6:]},
        },
        "noise_contexts": {
            "context_id": np.array([c.prompt_id for c in contexts], np.int32),
            "text": np.array([c.text for c in contexts], dtype=object),
            "n_tokens": np.array([len(c.token_ids) for c in contexts], np.int16),
        },
        "noise_null": {c: (np.concatenate(v) if v else np.empty(0)) for c, v in null.items()},
    }

    def flat(parts):
        return torch.cat(parts).double().cpu().numpy() if parts else np.empty(0)

    chosen_set = {(sites[k].layer, f) for k in chosen for f in chosen[k]}
    acc = samples[0].pairs if samples else _PairAcc(0, 0, "cpu")
    last_pid = flat([p for p, _ in acc.edge_last]).astype(np.int64)
    last_val = flat([v for _, v in acc.edge_last])
    nz, mean, std, p95 = _pair_stats(acc.edge.cpu().numpy(), n_samples_edge, last_pid, last_val, n_last_edge)
    keep = np.array([(int(a), int(b)) in chosen_set for a, b in edge_targets[:, :2]], dtype=bool).reshape(-1)
    t = edge_targets[keep]
    tables["noise_edges"] = {
        "up_layer": t[:, 0].astype(np.int16),
        "up_feature": t[:, 1].astype(np.int32),
        "down_layer": t[:, 2].astype(np.int16),
        "down_feature": t[:, 3].astype(np.int32),
        "n": n_samples_edge[keep].astype(np.int32),
        "n_active": nz[keep].astype(np.int32),
        "mean": mean[keep].astype(np.float32),
        "std": std[keep].astype(np.float32),
        "abs_p95": p95[keep].astype(np.float32),
        "z_scale": std[keep].astype(np.float32),
    }
    last_pid = flat([p for p, _ in acc.logit_last]).astype(np.int64)
    last_val = flat([v for _, v in acc.logit_last])
    logit_acc = acc.logit.cpu().numpy()
    nz, mean, std, p95 = _pair_stats(logit_acc[:, :3], n_samples_logit, last_pid, last_val, n_last_logit)
    dl_acc = np.concatenate([logit_acc[:, 3:5], logit_acc[:, 2:3]], 1)
    _, lmean, lstd, _ = _pair_stats(dl_acc, n_samples_logit, last_pid[:0], last_val[:0], n_last_logit * 0)
    keep = np.array([(int(a), int(b)) in chosen_set for a, b in logit_targets[:, :2]], dtype=bool).reshape(-1)
    t = logit_targets[keep]
    tables["noise_logits"] = {
        "layer": t[:, 0].astype(np.int16),
        "feature": t[:, 1].astype(np.int32),
        "token_id": t[:, 2].astype(np.int32),
        "n": n_samples_logit[keep].astype(np.int32),
        "n_active": nz[keep].astype(np.int32),
        "dprob_mean": mean[keep].astype(np.float32),
        "dprob_std": std[keep].astype(np.float32),
        "dprob_abs_p95": p95[keep].astype(np.float32),
        "dlogp_mean": lmean[keep].astype(np.float32),
        "dlogp_std": lstd[keep].astype(np.float32),
        "z_scale": std[keep].astype(np.float32),
    }
    # Every table's columns in the table spec's order (store/tables.py).
    return {name: {c: cols[c] for c in value_columns(name)} for name, cols in tables.items()}


def _q(values: np.ndarray, q: float) -> float | None:
    return float(np.quantile(values, q)) if len(values) else None
