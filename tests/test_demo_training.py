"""The demo training pipeline's pieces: corpus, batching, loss, and a smoke run of ``python -m featuregraph.demo.train``."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace

import pytest
import torch

from featuregraph.demo.config import TrainConfig
from featuregraph.demo.corpus import AMBIGUITY_LEVELS, TASKS, CorpusGenerator, is_heldout
from featuregraph.demo.lm_training import document_batch, make_model, weighted_lm_loss
from featuregraph.demo.tokenization import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = (e.text for e in CorpusGenerator(5, "train").take(2_000))
    return train_tokenizer(texts, 512)


def test_ioi_answer_is_the_name_not_repeated() -> None:
    for ex in CorpusGenerator(7, "train").balanced(50, tags=("ioi",)):
        names = re.findall(r"\b[A-Z][a-z]+\b", ex.prompt)
        answer = ex.answer.strip()
        # The indirect object appears once in the prompt; the subject twice.
        assert names.count(answer) == 1, ex.prompt
        others = {n for n in names if n != answer and names.count(n) == 2}
        assert len(others) == 1, ex.prompt
        assert ex.text.startswith(ex.prompt + ex.answer)


def test_ambiguous_continuations_follow_their_rates() -> None:
    """Bracket and acronym documents take their variant at the controlled rate; IOI and filler never do."""
    mix = {"paren": 0.4, "acronym": 0.4, "ioi": 0.1, "filler": 0.1}
    docs = CorpusGenerator(4, "train", ambiguity=True).take(6_000, mix)
    for tag in ("ioi", "filler"):
        assert not any(e.variant for e in docs if e.tag == tag)
    for tag in ("paren", "acronym"):
        rows = [e for e in docs if e.tag == tag]
        rate = sum(bool(e.variant) for e in rows) / len(rows)
        # Templates are spread over the levels, so the overall rate lies near their mean.
        assert min(AMBIGUITY_LEVELS) < rate < max(AMBIGUITY_LEVELS), (tag, rate)
        for e in rows:
            # The text continues with the variant where there is one, else with the answer.
            assert e.text.startswith(e.prompt + (e.variant or e.answer)), e
            assert not e.variant or not e.variant.startswith(e.answer), e
    # Frames close with the other bracket: " ]" where " )" was due and vice versa.
    frames = [e for e in docs if e.tag == "paren" and e.variant in (" )", " ]")]
    assert frames and all({e.variant, e.answer} == {" )", " ]"} for e in frames)
    # Off, nothing varies and the stream is the one drawn before ambiguity existed.
    plain = CorpusGenerator(4, "train").take(6_000, mix)
    assert not any(e.variant for e in plain)
    assert all(e.text.startswith(e.prompt + e.answer) for e in plain)


def test_corpus_is_seeded_and_the_splits_do_not_share_keys() -> None:
    a = CorpusGenerator(3, "train").take(200)
    b = CorpusGenerator(3, "train").take(200)
    assert a == b
    held = CorpusGenerator(3, "heldout").balanced(30)
    assert all(is_heldout(e.key) for e in held)
    assert not any(is_heldout(e.key) for e in a)
    assert {e.tag for e in held} == set(TASKS)


def test_document_batch_weights(tokenizer) -> None:
    docs = CorpusGenerator(1, "train").take(6, {"ioi": 0.5, "filler": 0.5})
    tokens, weights = document_batch(tokenizer, docs, answer_weight=8.0)
    bos = tokenizer.bos_token_id
    for i, doc in enumerate(docs):
        ids = tokenizer(doc.text)["input_ids"]
        n = len(ids)
        assert tokens[i, 0] == bos and tokens[i, 1 : n + 1].tolist() == ids and tokens[i, n + 1] == bos
        assert weights[i, 0] == 0 and (weights[i, n + 2 :] == 0).all()  # nothing predicts BOS or padding
        assert (weights[i, 1 : n + 2] > 0).all()
        answer_positions = (weights[i] == 8.0).nonzero().flatten()
        if doc.tag == "ioi":
            assert tokenizer.decode(tokens[i, answer_positions]) == doc.answer
        else:
            assert len(answer_positions) == 0


def test_micro_batches_give_the_full_batch_loss(tokenizer) -> None:
    """Splitting a step's documents into micro-batches must not change the loss (padding is inert)."""
    torch.manual_seed(0)
    cfg = replace(TrainConfig(), n_layers=1, d_model=32, n_heads=2)
    model = make_model(cfg, len(tokenizer), tokenizer.bos_token_id)
    docs = sorted(CorpusGenerator(2, "train").take(12), key=lambda e: len(e.text))
    whole_sum, whole_plain, whole_n = weighted_lm_loss(model, *document_batch(tokenizer, docs, 8.0))
    parts = [weighted_lm_loss(model, *document_batch(tokenizer, docs[i : i + 4], 8.0)) for i in range(0, 12, 4)]
    assert sum(p[0] for p in parts).item() == pytest.approx(whole_sum.item(), rel=1e-5)
    assert sum(p[1] for p in parts) == pytest.approx(whole_plain, rel=1e-5)
    assert sum(p[2] for p in parts) == whole_n


def test_quick_training_run_writes_loadable_assets(tmp_path) -> None:
    from featuregraph.demo.loading import load_attn_saes, load_hooked_model, load_saes
    from featuregraph.demo.train import main

    threads = torch.get_num_threads()
    main(["--quick", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads  # the run's thread setting does not leak
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["quick"] is True
    assert set(manifest["metrics"]["task_accuracy"]) == set(TASKS)
    assert (tmp_path / "prompts.jsonl").is_file() and (tmp_path / "noise_corpus.jsonl").is_file()
    bundled = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    heldout = [json.loads(line) for line in (tmp_path / "heldout.jsonl").read_text().splitlines()]
    per_task = manifest["config"]["heldout_prompts_per_task"]
    assert Counter(r["tag"] for r in heldout) == dict.fromkeys(TASKS, per_task)
    assert all(r["answer"] for r in heldout)
    assert not {r["text"] for r in heldout} & {r["text"] for r in bundled}  # never swept by the demo
    model = load_hooked_model(tmp_path / "model")
    saes = load_saes(tmp_path)
    assert list(saes) == manifest["sae_hook_names"]
    for hook, sae in saes.items():
        # Trained as BatchTopK, saved (by sae_lens) as JumpReLU with the learned global threshold.
        assert manifest["config"]["sae_architecture"] == "batchtopk"
        assert sae.cfg.architecture() == "jumprelu"
        assert torch.unique(sae.threshold).numel() == 1 and float(sae.threshold[0]) > 0
        assert manifest["targets_met"][f"sae_mean_l0/{hook}"] == (5 <= manifest["metrics"]["sae"][hook]["mean_l0"] <= 40)
        assert sae.cfg.d_in == model.cfg.d_model
    # --saes-only keeps the model byte for byte and retrains only the SAEs.
    weights = (tmp_path / "model" / "model.safetensors").read_bytes()
    main(["--quick", "--out", str(tmp_path), "--saes-only"])
    again = json.loads((tmp_path / "manifest.json").read_text())
    assert again["saes_only"] is True and manifest["saes_only"] is False
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == weights
    assert again["model"]["lm_loss_curve"] == manifest["model"]["lm_loss_curve"]
    assert list(load_saes(tmp_path)) == manifest["sae_hook_names"]
    # One attention-output SAE per block, in sae_lens' hook_z layout, splicing into the model.
    attn = load_attn_saes(tmp_path)
    assert list(attn) == again["attn_saes"]["hook_names"] == [f"blocks.{i}.attn.hook_z" for i in range(model.cfg.n_layers)]
    tokens = model.to_tokens("We met Anna (at the")
    _, cache = model.run_with_cache(tokens)
    for hook, sae in attn.items():
        assert sae.cfg.reshape_activations == "hook_z" and sae.cfg.d_in == model.cfg.n_heads * model.cfg.d_head
        assert sae.decode(sae.encode(cache[hook])).shape == cache[hook].shape


def test_lm_only_then_saes_only(tmp_path) -> None:
    """The tuning flow: --lm-only writes a partial manifest (no SAEs yet); --saes-only completes it."""
    from featuregraph.demo.train import main

    main(["--quick", "--out", str(tmp_path), "--lm-only", "--set", "attn_saes=0"])
    partial = json.loads((tmp_path / "manifest.json").read_text())
    assert "sae_hook_names" not in partial and not (tmp_path / "saes").exists()
    main(["--quick", "--out", str(tmp_path), "--saes-only", "--set", "attn_saes=0"])
    done = json.loads((tmp_path / "manifest.json").read_text())
    assert done["saes_only"] is True and set(done["metrics"]["sae"]) == set(done["sae_hook_names"])
    assert "attn_saes" not in done and not (tmp_path / "attn_saes").exists()


def test_set_overrides_parse_every_field_kind() -> None:
    from featuregraph.demo.train import config_from_args, parse_args

    args = parse_args(["--set", "sae_architecture=jumprelu", "sae_l1_per_site=1,2.5,3,4,5", "sae_lr=0.01", "lm_steps=7"])
    cfg = config_from_args(args)
    assert (cfg.sae_architecture, cfg.sae_l1_per_site, cfg.sae_lr, cfg.lm_steps) == ("jumprelu", (1.0, 2.5, 3.0, 4.0, 5.0), 0.01, 7)
    hooks = ["a", "b", "c", "d", "e"]
    assert cfg.sae_l1_coefficients(hooks) == {"a": 1.0, "b": 2.5, "c": 3.0, "d": 4.0, "e": 5.0}
    assert TrainConfig().sae_l1_coefficients(hooks) == dict.fromkeys(hooks, TrainConfig().sae_l1_coefficient)
    with pytest.raises(ValueError, match="5 values for 6 sites"):
        cfg.sae_l1_coefficients(hooks + ["f"])
