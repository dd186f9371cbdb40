"""Path validation and response curves (docs/method.md#validating-a-path, #response-curves).

- Validation: ablate a feature set (a path, or any set) jointly on new prompts and record how the
  answer and the next-token distribution move, next to a control set at the same sites and of the
  same size (ingest/controls.py: matched in activation by default); paired statistics over the
  prompts compare the two (ingest/validation_stats.py).
- Response curves: scale one upstream feature by a coefficient c (1 = clean, 0 = zero-ablated,
  2 = doubled) and record a downstream feature's activation and chosen tokens' probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from featuregraph.errors import InputError
from featuregraph.ingest.controls import CONTROLS, activation_ratio, choose_controls, inactive
from featuregraph.ingest.reload import RunContext
from featuregraph.ingest.sweep import PromptInput
from featuregraph.ingest.validation_stats import paired_summary
from featuregraph.store.models import Node
from featuregraph.store.tables import value_columns

# A control whose summed activation is outside this factor of the path's (median over prompts) is
# not comparable in magnitude; the summary warns.
RATIO_OK = (0.5, 2.0)


@dataclass(frozen=True)
class ValidationSpec:
    """Settings of a validation experiment, stored verbatim in ``experiments.spec``."""

    features: tuple[str, ...]
    prompts_source: str
    control: str = "matched"
    coefficient: float = 0.0
    top_k: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.features:
            raise InputError("validation needs at least one feature (e.g. --path 3.120,4.77)")
        if self.control not in CONTROLS:
            raise InputError(f"unknown control {self.control!r}; choose from {', '.join(CONTROLS)}")
        if self.top_k < 1:
            raise InputError(f"top_k must be >= 1, got {self.top_k}")


def _names(ctx: RunContext, pairs) -> str:
    return ",".join(str(Node(ctx.loaded.sites[k].layer, f)) for k, f in pairs)


def _flat(sets: dict[int, list[int]]) -> list[tuple[int, int]]:
    return [(k, f) for k in sorted(sets) for f in sets[k]]


def _strength(ctx: RunContext, sweeper, clean, sites) -> dict[int, np.ndarray]:
    """Per site index: [prompts, d_sae] largest |clean activation| over the positions an ablation changes."""
    out = {}
    for k in sites:
        site = ctx.loaded.sites[k]
        acts = sweeper.ablatable(clean, k, site.sae.encode(clean.resid[site.layer]))
        out[k] = acts.abs().amax(1).double().cpu().numpy()
    return out


def _answer_effects(logp_clean: torch.Tensor, logp_abl: torch.Tensor, ans: int | None) -> tuple:
    """(dprob, dprob / p_clean, dlogp, wrong token, clean logit diff, its change) of the answer.

    The wrong token is the clean run's most likely token other than the answer, kept for the ablated
    run. A difference of log-probabilities of two tokens is their logit difference (the softmax's
    normaliser cancels), so no raw logits are needed.
    """
    if ans is None:
        return (None,) * 6
    others = logp_clean.clone()
    others[ans] = -torch.inf
    wrong = int(others.argmax())
    pc, pa = float(logp_clean[ans].exp()), float(logp_abl[ans].exp())
    ld_clean = float(logp_clean[ans] - logp_clean[wrong])
    ld_abl = float(logp_abl[ans] - logp_abl[wrong])
    return pa - pc, (pa - pc) / pc if pc > 0 else None, float(logp_abl[ans] - logp_clean[ans]), wrong, ld_clean, ld_abl - ld_clean


@torch.no_grad()
def validate(
    ctx: RunContext, spec: ValidationSpec, prompts: list[PromptInput], answers: list[int | None]
) -> tuple[dict[str, dict[str, list]], dict]:
    """Run the path and control arms on ``prompts``; return result columns and a summary.

    ``answers`` holds, per prompt, the token id of an expected answer (or None).
    """
    sweeper = ctx.sweeper()
    path: dict[int, list[int]] = {}
    for node in map(Node.parse, spec.features):
        path.setdefault(ctx.site_index(node), []).append(node.feature)
    clean = sweeper.clean_pass(prompts)
    n = len(prompts)
    idx = torch.arange(n, device=sweeper.device)
    strength = _strength(ctx, sweeper, clean, sorted(path))
    controls = choose_controls(spec.control, path, strength, spec.seed)
    logp_clean = clean.logp.float()
    p_clean = logp_clean.exp()
    arms = {
        "path": sweeper.ablate_sets(clean, idx, [path] * n, spec.coefficient).float(),
        "control": sweeper.ablate_sets(clean, idx, [c.features for c in controls], spec.coefficient).float(),
    }
    # Rows are appended as tuples in the table spec's column order (store/tables.py).
    res: dict[str, list] = {c: [] for c in value_columns("validation_results")}
    tok: dict[str, list] = {c: [] for c in value_columns("validation_tokens")}

    def add_tokens(i: int, arm: str, kind: str, ids: torch.Tensor, p_abl: torch.Tensor) -> None:
        for rank, t in enumerate(ids.tolist(), start=1):
            pc, pa = float(p_clean[i, t]), float(p_abl[t])
            for c, v in zip(tok, (i, arm, kind, rank, t, pc, pa, pa - pc, (pa - pc) / pc if pc > 0 else None), strict=True):
                tok[c].append(v)

    k = min(spec.top_k, p_clean.shape[-1] // 2)
    for i, prompt in enumerate(prompts):
        add_tokens(i, "clean", "top", p_clean[i].topk(k).indices, p_clean[i])
        for arm, logp_abl in arms.items():
            p_abl = logp_abl[i].exp()
            dprob = p_abl - p_clean[i]
            add_tokens(i, arm, "promoted", dprob.topk(k).indices, p_abl)
            add_tokens(i, arm, "suppressed", (-dprob).topk(k).indices, p_abl)
            sets = path if arm == "path" else controls[i].features
            extra = (None, None) if arm == "path" else (activation_ratio(sets, path, strength, i), controls[i].unmatched)
            row = (
                i, prompt.text, arm, _names(ctx, _flat(sets)), 0.5 * float(dprob.abs().sum()), answers[i],
                *_answer_effects(logp_clean[i], logp_abl[i], answers[i]),
                _names(ctx, inactive(sets, strength, i)), *extra,
            )  # fmt: skip
            for c, v in zip(res, row, strict=True):
                res[c].append(v)
    summary = _summary(ctx, spec, res, path, strength, n)
    # Plain lists: None becomes NULL on the way into DuckDB.
    return {"validation_results": res, "validation_tokens": tok}, summary


def _by_arm(res: dict[str, list], column: str, n: int) -> np.ndarray:
    """[prompts, 2] (path, control) of a result column; rows alternate path, control per prompt."""
    return np.array([np.nan if v is None else v for v in res[column]], dtype=float).reshape(n, 2)


def _summary(ctx: RunContext, spec: ValidationSpec, res: dict[str, list], path, strength, n: int) -> dict:
    tv = _by_arm(res, "total_variation", n)
    summary: dict = {
        "prompts": n,
        "control": spec.control,
        "mean_total_variation_path": float(tv[:, 0].mean()),
        "mean_total_variation_control": float(tv[:, 1].mean()),
        "path_beats_control": float((tv[:, 0] > tv[:, 1]).mean()),
    }
    warnings = []
    with_answer = [i for i in range(n) if res["answer_token_id"][2 * i] is not None]
    summary["prompts_with_answer"] = len(with_answer)
    if with_answer:
        ad = _by_arm(res, "answer_dprob", n)[with_answer]
        summary["mean_answer_dprob_path"] = float(ad[:, 0].mean())
        summary["mean_answer_dprob_control"] = float(ad[:, 1].mean())
        for col in ("answer_dlogp", "answer_dlogit_diff"):
            arr = _by_arm(res, col, n)[with_answer]
            summary[col] = paired_summary(arr[:, 0], arr[:, 1], spec.seed)
    else:
        warnings.append("no prompt names an answer: only total variation is compared (add \"answer\" to the .jsonl lines)")
    counts: dict[str, int] = {}
    for i in range(n):
        for k, f in inactive(path, strength, i):
            name = str(Node(ctx.loaded.sites[k].layer, f))
            counts[name] = counts.get(name, 0) + 1
    summary["path_inactive"] = counts
    for name, c in counts.items():
        warnings.append(f"path feature {name} is inactive in {c} of {n} prompts: ablating it there changes nothing")
    ctrl_inactive = sum(1 for i in range(n) if res["inactive_features"][2 * i + 1])
    unmatched = [res["n_unmatched"][2 * i + 1] for i in range(n)]
    summary["control_inactive_prompts"] = ctrl_inactive
    summary["control_unmatched_prompts"] = sum(1 for u in unmatched if u)
    if ctrl_inactive:
        warnings.append(f"control features are inactive in {ctrl_inactive} of {n} prompts: there the control does nothing")
    if any(unmatched):
        warnings.append(
            f"too few active features to build the control in {summary['control_unmatched_prompts']} of {n} prompts "
            f"({sum(unmatched)} control features missing; the control ablates fewer features there)"
        )
    ratios = [r for r in res["activation_ratio"][1::2] if r is not None]
    if ratios:
        summary["control_activation_ratio"] = {"median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios)}
        if not RATIO_OK[0] <= summary["control_activation_ratio"]["median"] <= RATIO_OK[1]:
            warnings.append(
                f"the control removes {summary['control_activation_ratio']['median']:.2g} times the path's activation "
                "(median over prompts): no active features of similar magnitude to match"
            )
    summary["warnings"] = warnings
    return summary


@dataclass(frozen=True)
class CurveSpec:
    """Settings of a response curve, stored verbatim in ``experiments.spec``."""

    up: str
    down: str | None
    prompt: str
    coefficients: tuple[float, ...]
    tokens: tuple[int, ...] = ()  # token ids to follow; empty: the clean top 5

    def __post_init__(self) -> None:
        if len(self.coefficients) < 2:
            raise InputError("a response curve needs at least two coefficients")


@torch.no_grad()
def response_curve(ctx: RunContext, spec: CurveSpec, prompt: PromptInput) -> tuple[dict[str, dict[str, list]], dict]:
    """One forward per coefficient, batched; returns ``curve_points`` columns and a summary."""
    sweeper = ctx.sweeper()
    up = Node.parse(spec.up)
    k = ctx.site_index(up)
    clean = sweeper.clean_pass([prompt])
    site = ctx.loaded.sites[k]
    removed = sweeper.ablatable(clean, k, site.sae.encode(clean.resid[site.layer]))[0, :, up.feature]
    if not bool((removed != 0).any()):
        raise InputError(f"feature {up} is not active in the prompt at any ablatable position")
    down_col = None
    if spec.down is not None:
        down = Node.parse(spec.down)
        if ctx.site_index(down) != k + 1:
            raise InputError(f"{spec.down} is not at the SAE site right after {spec.up}'s (edges join adjacent sites)")
        down_col = down.feature
    coefs = torch.tensor(spec.coefficients, device=sweeper.device, dtype=removed.dtype)
    n = coefs.shape[0]
    zeros = torch.zeros(n, dtype=torch.long, device=sweeper.device)
    feats = torch.full((n,), up.feature, dtype=torch.long, device=sweeper.device)
    down_acts, logp = sweeper.ablate(clean, k, zeros, feats, removed[None].expand(n, -1), coefs - 1.0)
    tokens = list(spec.tokens) or clean.logp[0].topk(min(5, clean.logp.shape[-1])).indices.tolist()
    rows: dict[str, list] = {c: [] for c in value_columns("curve_points")}
    for i, c in enumerate(spec.coefficients):
        act = float(down_acts[i, down_col]) if down_col is not None and down_acts is not None else None
        for t in tokens:
            for col, v in zip(rows, (c, act, t, float(logp[i, t]), float(logp[i, t].exp())), strict=True):
                rows[col].append(v)
    summary = {"tokens": tokens, "points": n}
    if down_col is not None and down_acts is not None:
        ys = down_acts[:, down_col].double().cpu().numpy()
        xs = np.array(spec.coefficients, dtype=float)
        slope, intercept = np.polyfit(xs, ys, 1)
        fit = slope * xs + intercept
        ss = float(((ys - ys.mean()) ** 2).sum())
        summary.update(slope=float(slope), intercept=float(intercept), r2=1.0 - float(((ys - fit) ** 2).sum()) / ss if ss > 0 else 1.0)
    # Plain lists, typed by the table spec when written; None becomes NULL.
    return {"curve_points": rows}, summary
