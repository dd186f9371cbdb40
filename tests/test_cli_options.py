"""`featuregraph ingest`'s settings flags are built from the config dataclasses."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

import featuregraph.ingest.run as ingest_run
from featuregraph.cli import app
from featuregraph.ingest.config import DTYPES, ModelSpec, RunConfig, SweepConfig


class Captured(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """Stop the ingest at the run call and keep the RunConfig the CLI built."""
    seen = {}

    def fake_ingest(db, source, config, **kwargs):
        seen["config"] = config
        seen["kwargs"] = kwargs
        raise Captured

    monkeypatch.setattr(ingest_run, "ingest", fake_ingest)
    return seen


def _ingest(tmp_path, *flags):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    args = ["ingest", str(prompts), "--db", str(tmp_path / "x.duckdb"), "--sae", str(tmp_path), *flags]
    return CliRunner().invoke(app, args)


def test_every_sweep_field_has_a_flag_with_its_help():
    text = " ".join(CliRunner().invoke(app, ["ingest", "--help"], terminal_width=200).output.split())
    for f in dataclasses.fields(SweepConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert f.metadata["help"] in text, f.name
    for name in DTYPES:
        assert name in text


def test_defaults_are_the_dataclass_defaults(tmp_path, captured):
    result = _ingest(tmp_path)
    assert isinstance(result.exception, Captured), result.output
    config = captured["config"]
    assert config.sweep == SweepConfig()
    assert config.model == ModelSpec("gpt2")
    defaults = RunConfig(ModelSpec("gpt2"), config.saes)
    assert (config.device, config.dtype, config.prepend_bos) == (
        defaults.device,
        defaults.dtype,
        defaults.prepend_bos,
    )


def test_flags_reach_the_config(tmp_path, captured):
    result = _ingest(
        tmp_path, "--read-position", "2", "--coefficient", "0.5", "--edge-top-k", "7", "--batch-size", "3",
        "--no-fold-ln", "--no-center-unembed", "--dtype", "float64", "--no-prepend-bos", "--device", "cpu",
    )  # fmt: skip
    assert isinstance(result.exception, Captured), result.output
    config = captured["config"]
    assert (config.sweep.read_position, config.sweep.coefficient, config.sweep.edge_top_k) == (2, 0.5, 7)
    assert config.sweep.batch_size == 3
    assert (config.model.fold_ln, config.model.center_writing_weights, config.model.center_unembed) == (
        False, True, False,
    )  # fmt: skip
    assert (config.device, config.dtype, config.prepend_bos) == ("cpu", "float64", False)


def test_choices_come_from_the_registries(tmp_path, captured):
    result = _ingest(tmp_path, "--dtype", "int8")
    assert result.exit_code == 2 and "float32" in result.output
    result = _ingest(tmp_path, "--read-position", "-2")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: read_position must be -1 (last token) or >= 0, got -2"
    ]
