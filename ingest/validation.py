"""Path validation and response curves (docs/method.md#validating-a-path, #response-curves).

- Validation: ablate a feature set (a path, or any set) jointly on new prompts and record how the
  next-token distribution moves, next to a control set of equal placement and size: feature 0 (and
  1, 2, ... when a layer holds several) at the same layers, as the seed did, or random features
  active in each prompt at those layers.
- Response curves: scale one upstream feature by a coefficient c (1 = clean, 0 = zero-ablated,
  2 = doubled) and record a downstream feature's activation and chosen tokens' probabilities.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from featuregraph.errors import InputError
from featuregraph.ingest.reload import RunContext
from featuregraph.ingest.sweep import PromptInput
from featuregraph.store.models import Node
from featuregraph.store.tables import value_columns

CONTROLS = ("zero", "random")


@dataclass(frozen=True)
class ValidationSpec:
    """Settings of a validation experiment, stored verbatim in ``experiments.spec``."""

    features: tuple[str, ...]
    prompts_source: str
    control: str = "random"
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


def _control_sets(
    ctx: RunContext, path: dict[int, list[int]], clean, sweeper, n_prompts: int, kind: str, seed: int
) -> list[dict[int, list[int]]]:
    if kind == "zero":
        fixed = {k: list(range(len(feats))) for k, feats in path.items()}
        return [fixed] * n_prompts
    rng = random.Random(seed)
    out: list[dict[int, list[int]]] = [{} for _ in range(n_prompts)]
    for k, feats in path.items():
        site = ctx.loaded.sites[k]
        active = (sweeper.ablatable(clean, k, site.sae.encode(clean.resid[site.layer])) != 0).any(1)  # [prompts, d_sae]
        for i in range(n_prompts):
            pool = sorted(set(active[i].nonzero()[:, 0].tolist()) - set(feats))
            if len(pool) < len(feats):  # too few active: fill from the rest of the SAE
                pool += rng.sample(sorted(set(range(site.d_sae)) - set(feats) - set(pool)), len(feats) - len(pool))
            out[i][k] = sorted(rng.sample(pool, len(feats)))
    return out


def _names(ctx: RunContext, sets: dict[int, list[int]]) -> str:
    return ",".join(str(Node(ctx.loaded.sites[k].layer, f)) for k in sorted(sets) for f in sets[k])


@torch.no_grad()
def validate(
    ctx: RunContext, spec: ValidationSpec, prompts: list[PromptInput], answers: list[int | None]
) -> tuple[dict[str, dict[str, list]], dict]:
    """Run the path and control arms on ``prompts``; return result columns and a summary.

    ``answers`` holds, per prompt, the token id of an expected answer (or None).
    """
    sweeper = ctx.sweeper()
    nodes = [Node.parse(f) for f in spec.features]
    path: dict[int, list[int]] = {}
    for node in nodes:
        path.setdefault(ctx.site_index(node), []).append(node.feature)
    clean = sweeper.clean_pass(prompts)
    n = len(prompts)
    idx = torch.arange(n, device=sweeper.device)
    controls = _control_sets(ctx, path, clean, sweeper, n, spec.control, spec.seed)
    p_clean = clean.logp.exp()
    arms = {
        "path": sweeper.ablate_sets(clean, idx, [path] * n, spec.coefficient).exp(),
        "control": sweeper.ablate_sets(clean, idx, controls, spec.coefficient).exp(),
    }
    # Rows are appended as tuples in the table spec's column order (store/tables.py).
    res: dict[str, list] = {c: [] for c in value_columns("validation_results")}
    tok: dict[str, list] = {c: [] for c in value_columns("validation_tokens")}

    def add_tokens(i: int, arm: str, kind: str, ids: torch.Tensor, p_abl: torch.Tensor) -> None:
        for rank, t in enumerate(ids.tolist(), start=1):
            pc, pa = float(p_clean[i, t]), float(p_abl[t])
            for c, v in zip(tok, (i, arm, kind, rank, t, pc, pa, pa - pc, (pa - pc) / pc if pc > 0 else None)):
                tok[c].append(v)

    k = min(spec.top_k, p_clean.shape[-1] // 2)
    for i, prompt in enumerate(prompts):
        add_tokens(i, "clean", "top", p_clean[i].topk(k).indices, p_clean[i])
        for arm, p_abl in arms.items():
            dprob = p_abl[i] - p_clean[i]
            add_tokens(i, arm, "promoted", dprob.topk(k).indices, p_abl[i])
            add_tokens(i, arm, "suppressed", (-dprob).topk(k).indices, p_abl[i])
            ans = answers[i]
            a_d = float(dprob[ans]) if ans is not None else None
            a_f = a_d / float(p_clean[i, ans]) if ans is not None and float(p_clean[i, ans]) > 0 else None
            feats = path if arm == "path" else controls[i]
            for c, v in zip(res, (i, prompt.text, arm, _names(ctx, feats), 0.5 * float(dprob.abs().sum()), ans, a_d, a_f)):
                res[c].append(v)
    tv = np.array(res["total_variation"]).reshape(n, 2)
    summary = {
        "prompts": n,
        "mean_total_variation_path": float(tv[:, 0].mean()),
        "mean_total_variation_control": float(tv[:, 1].mean()),
        "path_beats_control": float((tv[:, 0] > tv[:, 1]).mean()),
    }
    with_answer = [i for i, a in enumerate(answers) if a is not None]
    if with_answer:
        ad = np.array(res["answer_dprob"], dtype=float).reshape(n, 2)[with_answer]
        summary["mean_answer_dprob_path"] = float(ad[:, 0].mean())
        summary["mean_answer_dprob_control"] = float(ad[:, 1].mean())
    # Plain lists: None becomes NULL on the way into DuckDB.
    tables = {"validation_results": res, "validation_tokens": tok}
    return tables, summary


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
            for col, v in zip(rows, (c, act, t, float(logp[i, t]), float(logp[i, t].exp()))):
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
