"""Every command's help, rendered at 80 columns, shows each option name whole and describes it."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from featuregraph.cli import app


def commands() -> list[tuple[list[str], object]]:
    """(argv prefix, command) for every leaf command of the app, sub-groups included."""
    out = []

    def walk(cmd, path: list[str]) -> None:
        if getattr(cmd, "commands", None):  # a group (typer vendors its own click classes)
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        else:
            out.append((path, cmd))

    walk(typer.main.get_command(app), [])
    return out


def test_the_walk_finds_the_commands():
    names = {" ".join(path) for path, _ in commands()}
    assert {"ingest", "dashboard", "demo", "validate", "curve", "sql"} <= names
    assert any(n.startswith("query ") for n in names)


@pytest.mark.parametrize("path,cmd", commands(), ids=lambda x: " ".join(x) if isinstance(x, list) else "")
def test_help_at_80_columns(path, cmd, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    text = result.output
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text
    for param in cmd.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        for name in param.opts + param.secondary_opts:
            # Whole: not followed by more name characters or an ellipsis.
            assert re.search(re.escape(name) + r"(?![\w-])", text), f"{' '.join(path)}: {name} cut or missing"
        assert param.help and param.help.strip(), f"{' '.join(path)}: {param.opts[0]} has no help"
        first_words = " ".join(param.help.split()[:2])
        assert first_words in " ".join(text.split()), f"{' '.join(path)}: help of {param.opts[0]} not shown"
