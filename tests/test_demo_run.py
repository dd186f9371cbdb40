"""``featuregraph demo`` on a small subset of the bundled prompts: what it makes, and running it twice."""

from __future__ import annotations

import duckdb
from typer.testing import CliRunner

from featuregraph.cli import app


def test_demo_on_a_subset_is_safe_to_run_twice(tmp_path):
    db = tmp_path / "demo.duckdb"
    args = ["demo", "--db", str(db), "--per-tag", "1", "--noise-contexts", "2", "--no-open", "-q", "--device", "cpu"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "noise baseline: experiment 1" in first.output
    assert "featuregraph dashboard" in first.output
    con = duckdb.connect(str(db), read_only=True)
    tags = dict(con.execute("SELECT tag, count(*) FROM prompts GROUP BY tag").fetchall())
    # one prompt per task, and one held-out filler prompt: the calibration check
    assert tags == {"acronym": 1, "ioi": 1, "paren": 1, "filler-heldout": 1}
    before = con.execute("SELECT count(*) FROM edges").fetchone()[0]
    assert before > 0
    assert con.execute("SELECT count(*) FROM edge_snr WHERE p_value IS NOT NULL").fetchone()[0] > 0
    assert "filler-heldout" in first.output and "p<0.01" in first.output
    con.close()

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "noise baseline: experiment" not in second.output  # already there: not computed again
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM edges").fetchone()[0] == before
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM experiments").fetchone()[0] == 1
    con.close()
