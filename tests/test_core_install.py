"""The core install (no torch, no sae_lens) reads databases: the query layer, the store, the
dashboard's modules and the CLI import without the ingest extra, and the compute commands say
which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from query_graphs import hand_database

BLOCKED = ("torch", "sae_lens", "transformer_lens", "transformers", "tokenizers", "datasets")

# sys.modules[name] = None makes `import name` raise ImportError, as if it were not installed.
PRELUDE = f"import sys\nfor name in {BLOCKED!r}:\n    sys.modules[name] = None\n"


def _run(body: str) -> subprocess.CompletedProcess:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_the_block_works():
    result = _run("import torch\n")
    assert result.returncode != 0 and "import of torch halted" in result.stderr


def test_read_side_imports_without_torch(tmp_path):
    db = hand_database(tmp_path / "hand.duckdb")
    result = _run(
        f"""
        import importlib, pkgutil
        import featuregraph.query, featuregraph.store, featuregraph.dashboard, featuregraph.dashboard.views
        names = ["featuregraph.cli"]
        for pkg in (featuregraph.query, featuregraph.store, featuregraph.dashboard, featuregraph.dashboard.views):
            names += [pkg.__name__ + "." + m.name for m in pkgutil.iter_modules(pkg.__path__)]
        # app.py is Streamlit's page script: importing it would draw the page.
        names = [n for n in names if n != "featuregraph.dashboard.app"]
        for name in names:
            importlib.import_module(name)
        assert "torch" not in [m for m, v in sys.modules.items() if v is not None]
        print(len(names))
        from featuregraph.cli import app
        app(["sql", {str(db)!r}, "SELECT path FROM recurring_paths(n_edges := 2) ORDER BY path"], standalone_mode=False)
        """
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[0]) > 20  # modules imported: the walk found the packages
    assert "0.1 -> 1.2 -> 2.3" in result.stdout


def test_compute_commands_name_the_extra(tmp_path):
    for argv in (["ingest", "prompts.txt"], ["demo", "--db", str(tmp_path / "d.duckdb")]):
        result = _run(f"from featuregraph.cli import main\nsys.argv = ['featuregraph', *{argv!r}]\nmain()\n")
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'featuregraph[ingest]'" in lines[0], result.stderr
