"""Checks on the committed demo assets (toy model, SAEs, prompt sets, manifest).

The model and SAEs are loaded exactly as featuregraph users load them
(:mod:`demo.loading`), and the quality numbers recorded in the manifest by
``python -m featuregraph.demo.train`` are re-measured: on the bundled jsonl files, and on the
held-out sets the training script evaluates on (regenerated from the manifest's seeds). The
quality targets are checked against the re-measured numbers; a missed target fails unless it is
a named known shortfall below, recorded as not met in the manifest with the value measured here.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import torch

from featuregraph.demo import (
    ASSETS_DIR,
    HELDOUT_PATH,
    MANIFEST_PATH,
    MODEL_DIR,
    NOISE_CORPUS_PATH,
    PROMPTS_PATH,
    SAES_DIR,
    sae_dirs,
)
from featuregraph.demo.config import TrainConfig
from featuregraph.demo.corpus import TASKS, CorpusGenerator
from featuregraph.demo.loading import load_attn_saes, load_hf_model, load_hooked_model, load_saes
from featuregraph.demo.metrics import (
    cross_entropy,
    encode_contexts,
    prepare_prompts,
    sae_stats,
    task_accuracy,
)

ASSET_BUDGET_BYTES = 25 * 1024 * 1024
# Re-measurement runs the same code on the same files; only floating-point
# differences across machines / thread counts can move the numbers.
ACCURACY_TOL = 0.02
EV_TOL = 0.01
L0_REL_TOL = 0.05
# Cross-entropy is re-measured on the first HELDOUT_DOCS of the manifest's held-out documents (a
# quarter: the full set takes a minute of CPU), so it agrees with the recorded figure to sampling
# error only: about 1% here.
HELDOUT_DOCS = 500
CE_REL_TOL = 0.03
# Relative: the subsample's sampling error grows with the increase itself (+233% for the JumpReLU SAEs).
CE_INCREASE_REL_TOL = 0.03

# Targets the committed assets are known to miss, by name, with where the shortfall is stated.
# Anything else missed fails; so does a known shortfall that is met again (drop it from here).
KNOWN_SHORTFALLS = {
    "ce_relative_increase": "README.md, 'The demo': all five SAEs spliced at once cost +233% cross-entropy "
    "against a 10% target",
}

# Targets met on the held-out sets (where the targets are defined) but missed on the smaller bundled files.
KNOWN_BUNDLED_SHORTFALLS = {
    "sae_explained_variance/blocks.0.hook_resid_pre": "README.md, 'The demo': 0.84 held out, 0.79 on the bundled files",
}


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return json.loads(MANIFEST_PATH.read_text())


@pytest.fixture(scope="module")
def hf_model():
    return load_hf_model()


@pytest.fixture(scope="module")
def model(hf_model):
    return load_hooked_model()


@pytest.fixture(scope="module")
def saes():
    return load_saes()


@pytest.fixture(scope="module")
def prompts() -> list[dict[str, str]]:
    return _read_jsonl(PROMPTS_PATH)


@pytest.fixture(scope="module")
def noise() -> list[dict[str, str]]:
    return _read_jsonl(NOISE_CORPUS_PATH)


def test_asset_size_budget() -> None:
    size = sum(p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file())
    assert size <= ASSET_BUDGET_BYTES, f"demo/assets is {size / 1e6:.1f} MB"


def test_layout_and_site_order(manifest: dict[str, Any]) -> None:
    n_layers = manifest["config"]["n_layers"]
    expected = [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"
    ]
    assert [p.name for p in sae_dirs()] == expected
    for path in sae_dirs():
        assert path.parent == SAES_DIR
        assert (path / "cfg.json").is_file() and (path / "sae_weights.safetensors").is_file()
    assert (MODEL_DIR / "model.safetensors").is_file()
    assert (MODEL_DIR / "tokenizer.json").is_file()


def test_prompt_files(prompts: list[dict[str, str]], noise: list[dict[str, str]], model) -> None:
    tags = Counter(r["tag"] for r in prompts)
    assert set(tags) == set(TASKS)
    assert sum(tags.values()) >= 200
    assert max(tags.values()) <= 1.5 * min(tags.values()), tags
    assert all(r["text"] and r["answer"] for r in prompts)
    lengths = [len(model.tokenizer(r["text"])["input_ids"]) for r in prompts]
    assert max(lengths) < 40
    assert len(noise) >= 150
    assert {r["tag"] for r in noise} == {"filler"}
    # Answers start on a token boundary (raises otherwise).
    prepare_prompts(model.tokenizer, prompts)


def test_heldout_prompts(prompts: list[dict[str, str]], model, manifest: dict[str, Any]) -> None:
    """demo/heldout.jsonl is the stretch of the evaluation set right after the bundled prompts,
    regenerated here from the manifest's seed."""
    heldout = _read_jsonl(HELDOUT_PATH)
    cfg = manifest["config"]
    n_heldout = cfg.get("heldout_prompts_per_task", TrainConfig().heldout_prompts_per_task)
    held = CorpusGenerator(manifest["corpus"]["seeds"]["heldout"], "heldout", ambiguity=bool(cfg.get("corpus_ambiguity", 0)))
    evaluation = [e.to_json() for e in held.balanced(cfg["eval_prompts_per_task"])]
    start = cfg["bundled_prompts_per_task"] * len(TASKS)
    assert heldout == evaluation[start : start + n_heldout * len(TASKS)]
    assert Counter(r["tag"] for r in heldout) == dict.fromkeys(TASKS, n_heldout)
    # The demo validates its paths on these: they must be prompts it never swept.
    assert not {r["text"] for r in heldout} & {r["text"] for r in prompts}
    prepare_prompts(model.tokenizer, heldout)


def test_sae_metadata(saes, model, manifest: dict[str, Any]) -> None:
    assert list(saes) == manifest["sae_hook_names"]
    for hook, sae in saes.items():
        meta = sae.cfg.metadata
        assert meta.hook_name == hook
        assert meta.prepend_bos is True
        assert meta.model_name == model.cfg.model_name
        assert meta.context_size == manifest["config"]["sae_context_size"]
        # The architecture the manifest's config trained: TopK (sae_k, the earlier script), else
        # the configured one (standard ReLU + L1, or JumpReLU).
        config = manifest["config"]
        # BatchTopK training saves a JumpReLU SAE (its learned threshold).
        trained = "topk" if "sae_k" in config else config.get("sae_architecture", "standard")
        expected = {"batchtopk": "jumprelu"}.get(trained, trained)
        assert sae.cfg.architecture() == expected
        if expected == "topk":
            assert sae.cfg.k == manifest["config"]["sae_k"]
        assert sae.cfg.d_in == model.cfg.d_model
        assert sae.cfg.d_sae == manifest["config"]["sae_width"]


def test_hooked_model_matches_hf(model, hf_model, prompts: list[dict[str, str]]) -> None:
    tokens, _ = encode_contexts(model.tokenizer, [r["text"] for r in prompts[:32]])
    with torch.no_grad():
        hf_pred = hf_model(tokens).logits.argmax(-1)
        tl_pred = model(tokens).argmax(-1)
    assert (hf_pred == tl_pred).float().mean() >= 0.999


@pytest.fixture(scope="module")
def bundled_measured(model, saes, prompts, noise) -> dict[str, Any]:
    """Task accuracy and SAE statistics re-measured on the bundled jsonl files."""
    tokens, valid = encode_contexts(model.tokenizer, [r["text"] for r in noise + prompts])
    return {
        "task_accuracy": task_accuracy(model, prepare_prompts(model.tokenizer, prompts)),
        "sae": sae_stats(model, saes, tokens, valid),
    }


@pytest.fixture(scope="module")
def heldout_measured(model, saes, manifest: dict[str, Any]) -> dict[str, Any]:
    """The held-out metrics of the manifest, re-measured on sets regenerated from its seeds (in the
    order the training script draws them: task prompts, noise contexts, documents)."""
    # Only the fields this TrainConfig knows: assets trained by an earlier version of the script
    # (the committed TopK SAEs, config key sae_k) keep their other settings.
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in manifest["config"].items() if k in known})
    held = CorpusGenerator(manifest["corpus"]["seeds"]["heldout"], "heldout", ambiguity=bool(cfg.corpus_ambiguity))
    task_prompts = [e.to_json() for e in held.balanced(cfg.eval_prompts_per_task)]
    held.balanced(cfg.noise_contexts, tags=("filler",))
    docs = held.take(cfg.eval_docs, cfg.train_mix())[:HELDOUT_DOCS]
    tokens, valid = encode_contexts(model.tokenizer, [d.text for d in docs])
    clean = cross_entropy(model, tokens, valid)
    spliced = cross_entropy(model, tokens, valid, list(saes.values()))
    return {
        "tokens": (tokens, valid),
        "task_accuracy": task_accuracy(model, prepare_prompts(model.tokenizer, task_prompts)),
        "sae": sae_stats(model, saes, tokens, valid),
        "ce_loss": {"clean": clean, "all_saes_spliced": spliced, "relative_increase": (spliced - clean) / clean},
    }


def _target_values(measured: dict[str, Any]) -> dict[str, tuple[float, bool]]:
    """``{target name: (measured value, met)}`` for the targets of a set of measurements, named as
    in the manifest's ``targets_met``; the bounds are the manifest's ``targets``."""
    targets = json.loads(MANIFEST_PATH.read_text())["targets"]
    out: dict[str, tuple[float, bool]] = {}
    for tag, acc in measured["task_accuracy"].items():
        out[f"task_accuracy/{tag}"] = (acc["first_token"], acc["first_token"] >= targets["task_accuracy_min"])
    for hook, stats in measured["sae"].items():
        ev, l0 = stats["explained_variance"], stats["mean_l0"]
        out[f"sae_explained_variance/{hook}"] = (ev, ev >= targets["sae_explained_variance_min"])
        out[f"sae_mean_l0/{hook}"] = (l0, targets["sae_mean_l0_min"] <= l0 <= targets["sae_mean_l0_max"])
    if "ce_loss" in measured:
        increase = measured["ce_loss"]["relative_increase"]
        out["ce_relative_increase"] = (increase, increase <= targets["ce_relative_increase_max"])
    return out


def test_task_accuracy_matches_manifest(bundled_measured, manifest: dict[str, Any]) -> None:
    measured = bundled_measured["task_accuracy"]
    recorded = manifest["bundled_check"]["task_accuracy"]
    for tag in TASKS:
        acc = measured[tag]["first_token"]
        assert acc == pytest.approx(recorded[tag]["first_token"], abs=ACCURACY_TOL), tag


def test_heldout_metrics_match_manifest(heldout_measured, manifest: dict[str, Any]) -> None:
    """The figures the README quotes (``metrics`` of the manifest), re-measured."""
    recorded = manifest["metrics"]
    for tag in TASKS:
        got = heldout_measured["task_accuracy"][tag]["first_token"]
        assert got == pytest.approx(recorded["task_accuracy"][tag]["first_token"], abs=ACCURACY_TOL), tag
    for hook, stats in heldout_measured["sae"].items():
        want = recorded["sae"][hook]
        assert stats["explained_variance"] == pytest.approx(want["explained_variance"], abs=EV_TOL), hook
        assert stats["mean_l0"] == pytest.approx(want["mean_l0"], rel=L0_REL_TOL), hook
    ce, want = heldout_measured["ce_loss"], recorded["ce_loss"]
    assert ce["clean"] == pytest.approx(want["clean"], rel=CE_REL_TOL)
    assert ce["all_saes_spliced"] == pytest.approx(want["all_saes_spliced"], rel=CE_REL_TOL)
    assert ce["relative_increase"] == pytest.approx(want["relative_increase"], rel=CE_INCREASE_REL_TOL)


def test_assets_meet_the_quality_targets(heldout_measured, bundled_measured, manifest: dict[str, Any]) -> None:
    """Every target is met by the re-measured numbers, on the held-out sets and on the bundled files,
    except a named known shortfall, which the manifest must record as not met with the value measured."""
    heldout = _target_values(heldout_measured)
    assert set(heldout) == set(manifest["targets_met"]), "the manifest names other targets than these"
    for name, (value, met) in heldout.items():
        if name in KNOWN_SHORTFALLS:
            assert not met, f"{name} is met again ({value:.3f}): drop it from KNOWN_SHORTFALLS and the README"
            assert manifest["targets_met"][name] is False, name
        else:
            assert met, f"{name}: measured {value:.3f} misses its target"
            assert manifest["targets_met"][name] is True, name
    recorded = manifest["metrics"]["ce_loss"]["relative_increase"]
    assert recorded == pytest.approx(heldout["ce_relative_increase"][0], rel=CE_INCREASE_REL_TOL)
    for name, (value, met) in _target_values(bundled_measured).items():
        if name in KNOWN_BUNDLED_SHORTFALLS:
            assert not met, f"{name} is met again on the bundled files ({value:.3f}): drop it from KNOWN_BUNDLED_SHORTFALLS"
        else:
            assert met or name in KNOWN_SHORTFALLS, f"{name} on the bundled files: measured {value:.3f}"


def test_sae_quality_matches_manifest(bundled_measured, manifest: dict[str, Any]) -> None:
    measured = bundled_measured["sae"]
    recorded = manifest["bundled_check"]["sae"]
    for hook, stats in measured.items():
        ev, l0 = stats["explained_variance"], stats["mean_l0"]
        assert ev == pytest.approx(recorded[hook]["explained_variance"], abs=EV_TOL), hook
        assert l0 == pytest.approx(recorded[hook]["mean_l0"], rel=L0_REL_TOL), hook
        assert 0.4 <= ev <= 1.0 and l0 >= 1, (hook, ev, l0)  # a working SAE, even below the targets


def test_attention_saes(model, heldout_measured, manifest: dict[str, Any]) -> None:
    """One hook_z SAE per block (demo.attn_saes): sae_lens hook_z layout, and the manifest's
    held-out explained variance and L0 re-measured on the same documents."""
    saes = load_attn_saes()
    recorded = manifest["attn_saes"]
    assert list(saes) == recorded["hook_names"] == [f"blocks.{i}.attn.hook_z" for i in range(model.cfg.n_layers)]
    tokens, valid = heldout_measured["tokens"]
    stats = sae_stats(model, saes, tokens, valid)
    for hook, sae in saes.items():
        assert sae.cfg.reshape_activations == "hook_z"
        assert sae.cfg.d_in == model.cfg.n_heads * model.cfg.d_head
        want = recorded["metrics"][hook]
        assert stats[hook]["explained_variance"] == pytest.approx(want["explained_variance"], abs=EV_TOL), hook
        assert stats[hook]["mean_l0"] == pytest.approx(want["mean_l0"], rel=L0_REL_TOL), hook


def test_every_asset_ships_in_a_wheel() -> None:
    """pyproject's package-data globs must cover every committed asset: a non-editable install
    (a wheel, or `pip install --target` on a GPU machine) carries only the files they match."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["featuregraph.demo"]
    demo = root / "demo"
    files = [p.relative_to(demo).as_posix() for p in (demo / "assets").rglob("*") if p.is_file()]
    assert files
    # setuptools' "*" does not cross a "/": compare level by level
    def matched(rel: str) -> bool:
        return any(
            len(g.split("/")) == len(rel.split("/")) and all(fnmatch.fnmatch(a, b) for a, b in zip(rel.split("/"), g.split("/"), strict=True))
            for g in globs
        )
    missing = [f for f in files if not matched(f)]
    assert not missing, f"assets a wheel would leave out: {missing}"
