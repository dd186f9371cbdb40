"""benchmarks/gpu_check.sh runs end to end in its CI-sized form (--cpu-smoke) and prints its one table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke_prints_the_table():
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout[out.stdout.index("| run | tokens |") :].strip().splitlines()
    rows = [r for r in table[2:] if r.startswith("|")]
    sweeps = [r for r in rows if r.startswith("| gpt2-shaped sweep")]
    assert [tuple(c.strip() for c in r.split("|")[2:4]) for r in sweeps] == [
        (n, dtype) for n in ("6", "12") for dtype in ("float32", "bfloat16", "delta-bfloat16")
    ]
    for r in sweeps:
        prompts_s, abl_s, gflop = (float(c) for c in r.split("|")[4:7])
        assert prompts_s > 0 and abl_s > prompts_s and gflop > 0
    assert any(r.startswith("| sweep + DuckDB writes (writer thread)") for r in rows)
    assert any(r.startswith("| demo model") and "skipped" not in r for r in rows)
    assert "skipped" not in out.stdout
