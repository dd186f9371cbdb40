"""Each bad input gives a clear one-line error naming the problem, and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featuregraph.cli import app
from featuregraph.ingest import synthetic as syn

runner = CliRunner()


def _run(args: list[str]):
    return runner.invoke(app, args)


def _ingest_args(assets: Path, db: Path, prompts: Path | None = None, saes: list[Path] | None = None) -> list[str]:
    args = ["ingest", str(prompts or assets / "prompts.txt"), "--db", str(db), "--model", str(assets / "model"), "-q"]
    for s in saes if saes is not None else [assets / f"sae{i}" for i in range(3)]:
        args += ["--sae", str(s)]
    return args


def _assert_one_line_error(result, pattern: str, db: Path) -> None:
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert out.startswith("Error: "), out
    assert len(out.splitlines()) == 1, f"not one line: {out}"
    assert "Traceback" not in out
    import re

    assert re.search(pattern, out), out
    assert not db.exists(), "nothing may be written"


def _sae_copy(assets: Path, tmp: Path, name: str, **cfg_changes) -> Path:
    dst = tmp / name
    shutil.copytree(assets / "sae0", dst)
    cfg = json.loads((dst / "cfg.json").read_text())
    for key, value in cfg_changes.items():
        if key in cfg:
            cfg[key] = value
        else:
            cfg["metadata"][key] = value
    (dst / "cfg.json").write_text(json.dumps(cfg))
    return dst


def test_wrong_sae_width(tiny_assets, tmp_path):
    import torch

    x = torch.randn(200, 16)
    syn.make_sae("blocks.0.hook_resid_pre", 16, 32, x, 0.1).save_model(tmp_path / "narrow")
    db = tmp_path / "fg.duckdb"
    res = _run(_ingest_args(tiny_assets, db, saes=[tmp_path / "narrow"]))
    _assert_one_line_error(res, r"wrong SAE width: SAE .*narrow reads vectors of size 16 but model .* has d_model 32", db)


def test_unknown_hook(tiny_assets, tmp_path):
    sae = _sae_copy(tiny_assets, tmp_path, "deep", hook_name="blocks.7.hook_resid_pre")
    db = tmp_path / "fg.duckdb"
    _assert_one_line_error(_run(_ingest_args(tiny_assets, db, saes=[sae])), r"unknown hook 'blocks.7.hook_resid_pre'.*2 layers", db)


def test_unsupported_site_kind(tiny_assets, tmp_path):
    sae = _sae_copy(tiny_assets, tmp_path, "attn", hook_name="blocks.0.hook_attn_out")
    db = tmp_path / "fg.duckdb"
    _assert_one_line_error(_run(_ingest_args(tiny_assets, db, saes=[sae])), r"unsupported SAE site 'blocks.0.hook_attn_out'", db)


def test_two_saes_on_one_hook(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    res = _run(_ingest_args(tiny_assets, db, saes=[tiny_assets / "sae0", tiny_assets / "sae0"]))
    _assert_one_line_error(res, r"two SAEs on one hook: layer 0", db)


def test_two_saes_on_one_residual_stream(tiny_assets, tmp_path):
    # blocks.0.hook_resid_post and blocks.1.hook_resid_pre are the same residual (layer 1).
    post = _sae_copy(tiny_assets, tmp_path, "post0", hook_name="blocks.0.hook_resid_post")
    db = tmp_path / "fg.duckdb"
    res = _run(_ingest_args(tiny_assets, db, saes=[post, tiny_assets / "sae1"]))
    _assert_one_line_error(res, r"two SAEs on one residual stream: layer 1", db)


def test_unknown_release_lists_valid_ones(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    args = ["ingest", str(tiny_assets / "prompts.txt"), "--db", str(db), "--model", "gpt2",
            "--sae-release", "gpt2-small-res-jbb", "--sae-id", "blocks.0.hook_resid_pre"]  # fmt: skip
    _assert_one_line_error(_run(args), r"unknown SAE release 'gpt2-small-res-jbb'; valid releases include: .*gpt2-small-res-jb", db)


def test_unknown_sae_id_lists_valid_ones(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    args = ["ingest", str(tiny_assets / "prompts.txt"), "--db", str(db), "--model", "gpt2",
            "--sae-release", "gpt2-small-res-jb", "--sae-layers", "5,99"]  # fmt: skip
    _assert_one_line_error(_run(args), r"unknown SAE id 'blocks.99.hook_resid_pre' in release 'gpt2-small-res-jb'; valid ids: .*blocks.9.hook_resid_pre", db)


@pytest.mark.parametrize("damage", ["missing", "no_weights", "bad_json", "bad_weights"])
def test_unreadable_sae_folder(tiny_assets, tmp_path, damage):
    folder = tmp_path / "sae"
    if damage != "missing":
        shutil.copytree(tiny_assets / "sae0", folder)
    if damage == "no_weights":
        (folder / "sae_weights.safetensors").unlink()
    elif damage == "bad_json":
        (folder / "cfg.json").write_text("{not json")
    elif damage == "bad_weights":
        (folder / "sae_weights.safetensors").write_bytes(b"\x00" * 64)
    db = tmp_path / "fg.duckdb"
    _assert_one_line_error(_run(_ingest_args(tiny_assets, db, saes=[folder])), r"cannot read SAE folder .*sae", db)


def test_unreadable_model_folder(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    args = _ingest_args(tiny_assets, db)
    args[args.index("--model") + 1] = str(tmp_path / "nowhere")
    _assert_one_line_error(_run(args), r"cannot read model folder .*nowhere", db)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ('{"text": "fine"}\n{"text": "   "}\n', r"p.jsonl:2: empty prompt"),
        ('{"text": "fine"}\n{"text": "' + "word " * 60 + '"}\n', r"p.jsonl:2: prompt too long: \d+ tokens, the model's context is 32"),
        ('{"text": "fine"}\n{"txt": "typo"}\n', r"p.jsonl:2: expected an object with a string 'text'"),
        ('{"text": "fine"}\nnot json\n', r"p.jsonl:2: not valid JSON"),
        ("\n\n", r"p.jsonl: no prompts in file"),
    ],
)
def test_bad_prompts(tiny_assets, tmp_path, content, pattern):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(content)
    db = tmp_path / "fg.duckdb"
    _assert_one_line_error(_run(_ingest_args(tiny_assets, db, prompts=prompts)), pattern, db)


def test_bad_options(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    _assert_one_line_error(_run(_ingest_args(tiny_assets, db) + ["--edge-top-k", "0"]), r"edge_top_k must be >= 1", db)
    _assert_one_line_error(_run(_ingest_args(tiny_assets, db) + ["--device", "tpu"]), r"unknown device 'tpu'", db)
    _assert_one_line_error(_run(_ingest_args(tiny_assets, db, saes=[])), r"no SAEs given", db)


def test_corrupt_database_is_refused_before_any_work(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    db.write_bytes(b"garbage" * 4096)
    res = _run(_ingest_args(tiny_assets, db))
    assert res.exit_code == 2 and "not a readable DuckDB database" in res.output
    assert db.read_bytes() == b"garbage" * 4096
    res = _run(["info", str(db)])
    assert res.exit_code == 2 and "not a readable DuckDB database" in res.output


# -- attention-output (hook_z), MLP-output and transcoder sites (ingest/sites.py) ------------------


def _hook_z_sae(tmp: Path, name: str, hook: str = "blocks.0.attn.hook_z", d_in: int = 32) -> Path:
    import torch

    syn.make_sae(hook, d_in, 40, torch.randn(200, d_in), 0.1, reshape_activations="hook_z").save_model(tmp / name)
    return tmp / name


def test_hook_z_sae_on_the_residual_stream(tiny_assets, tmp_path):
    sae = _hook_z_sae(tmp_path, "z")
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg["metadata"]["hook_name"] = "blocks.0.hook_resid_pre"
    (sae / "cfg.json").write_text(json.dumps(cfg))
    db = tmp_path / "fg.duckdb"
    res = _run(_ingest_args(tiny_assets, db, saes=[sae]))
    _assert_one_line_error(res, r"SAE .*z is a hook_z SAE \(reshape_activations hook_z\) but reads 'blocks.0.hook_resid_pre'", db)


def test_hook_z_sae_of_the_wrong_width(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    res = _run(_ingest_args(tiny_assets, db, saes=[_hook_z_sae(tmp_path, "wide", d_in=48)]))
    _assert_one_line_error(res, r"wrong SAE width: SAE .*wide reads vectors of size 48 but model .* has n_heads \* d_head 32 at blocks.0.attn.hook_z", db)


def test_residual_and_hook_z_widths_are_told_apart():
    """Where n_heads * d_head != d_model, a residual SAE on hook_z and a hook_z SAE on the
    residual are both refused by width (in GPT-2 the two widths are equal, 768)."""
    import torch
    from sae_lens import HookedSAETransformer
    from transformer_lens import HookedTransformerConfig

    from featuregraph.errors import LoadError
    from featuregraph.ingest.loading import SaeSite, check_fit
    from featuregraph.ingest.sites import site_of

    cfg = HookedTransformerConfig(n_layers=1, d_model=32, n_heads=4, d_head=4, d_vocab=16, n_ctx=8, act_fn="gelu")
    model = HookedSAETransformer(cfg)
    for hook, d_in, want in [("blocks.0.attn.hook_z", 32, "n_heads \\* d_head 16"), ("blocks.0.hook_resid_pre", 16, "d_model 32")]:
        sae = syn.make_sae(hook, d_in, 8, torch.randn(50, d_in), 0.1)
        kind, layer = site_of(hook, None, False, "x")
        site = SaeSite(layer, hook, sae, {"d_in": d_in, "path": "x"}, kind)
        with pytest.raises(LoadError, match=f"reads vectors of size {d_in} but model m has {want} at {hook}"):
            check_fit(model, [site], "m")


def test_two_saes_on_one_mlp_output(tiny_assets, tmp_path):
    import torch

    x = torch.randn(200, 32)
    syn.make_sae("blocks.0.hook_mlp_out", 32, 40, x, 0.1).save_model(tmp_path / "mlp")
    syn.make_transcoder("blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out", 32, 40, 32, x, 0.1).save_model(tmp_path / "tc")
    db = tmp_path / "fg.duckdb"
    res = _run(_ingest_args(tiny_assets, db, saes=[tmp_path / "mlp", tmp_path / "tc"]))
    _assert_one_line_error(res, r"two SAEs on one MLP output: layer 0 \((mlp_out|transcoder)\)", db)


def test_two_hook_z_saes_on_one_hook(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    res = _run(_ingest_args(tiny_assets, db, saes=[_hook_z_sae(tmp_path, "a"), _hook_z_sae(tmp_path, "b")]))
    _assert_one_line_error(res, r"two SAEs on one hook: layer 0 \(attn_z\)", db)


def test_unknown_hook_z_layer(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    res = _run(_ingest_args(tiny_assets, db, saes=[_hook_z_sae(tmp_path, "deep", hook="blocks.5.attn.hook_z")]))
    _assert_one_line_error(res, r"unknown hook 'blocks.5.attn.hook_z'", db)


def test_unknown_edge_target(tiny_assets, tmp_path):
    db = tmp_path / "fg.duckdb"
    res = _run(_ingest_args(tiny_assets, db) + ["--edge-target", "blocks.0.attn.hook_z"])
    _assert_one_line_error(res, r"edge target 'blocks.0.attn.hook_z' is neither each-kind nor next nor the hook of one of the run's SAEs", db)
