"""`validate`, `curve` and `noise` check their inputs against the database before any model loads."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import featuregraph.ingest.experiments as experiments
from featuregraph.cli import app
from featuregraph.ingest.config import ModelSpec, RunConfig, SaeSpec
from featuregraph.ingest.run import ingest


@pytest.fixture(scope="module")
def swept(tiny_assets, tmp_path_factory):
    """A run over the tiny model with SAEs at layers 0, 1 (64 features each)."""
    db = tmp_path_factory.mktemp("before_load") / "fg.duckdb"
    saes = tuple(SaeSpec(path=str(tiny_assets / f"sae{i}")) for i in range(2))
    config = RunConfig(ModelSpec(str(tiny_assets / "model")), saes, device="cpu")
    ingest(db, tiny_assets / "prompts.txt", config, progress=False)
    return db


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(experiments, "load_run", refuse)


def _error(args) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_the_database_knows_the_sites(swept):
    # The probes below rely on these sites; a run whose SAE layers changed would make them vacuous.
    import duckdb

    with duckdb.connect(str(swept), read_only=True) as con:
        assert con.execute("SELECT layer, d_sae FROM run_saes ORDER BY layer").fetchall() == [
            (0, 64),
            (1, 64),
        ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["curve", "--up", "7.1", "--prompt", "hi"], "no SAE at layer 7 in run 1 (layers: 0, 1)"),
        (["curve", "--up", "0.64", "--prompt", "hi"], "feature 0.64 is out of range"),
        (["curve", "--up", "0.1", "--down", "0.2", "--prompt", "hi"], "not at the SAE site right after"),
        (["curve", "--up", "0.1", "--prompt", "hi", "--coefficients", "1"], "at least two coefficients"),
        (["curve", "--up", "0.1", "--prompt", "hi", "--run", "9"], "no run 9"),
        (["curve", "--up", "x.1", "--prompt", "hi"], "x.1"),
        (["validate", "--path", "0.1,5.2", "--prompts", "PROMPTS"], "no SAE at layer 5"),
        (["validate", "--path", "1.99", "--prompts", "PROMPTS"], "feature 1.99 is out of range"),
        (["validate", "--path", "0.1", "--prompts", "PROMPTS", "--run", "3"], "no run 3"),
        (["noise", "--corpus", "PROMPTS", "--features", "2.0"], "no SAE at layer 2"),
    ],
)
def test_bad_inputs_fail_before_loading(swept, tiny_assets, no_loading, args, message):
    args = [str(tiny_assets / "prompts.txt") if a == "PROMPTS" else a for a in args]
    assert message in _error([args[0], str(swept), *args[1:]])


def test_good_inputs_reach_the_loader(swept, tiny_assets, no_loading):
    # The same guard lets valid inputs through to the (refused) model load.
    result = CliRunner().invoke(app, ["curve", str(swept), "--up", "0.1", "--down", "1.2", "--prompt", "hi"])
    assert isinstance(result.exception, AssertionError) and "model was loaded" in str(result.exception)
