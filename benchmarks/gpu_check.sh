#!/usr/bin/env bash
# The sweep's one GPU check (issue 14): installs what it needs, runs benchmarks/gpu_check.py, prints one table.
#   benchmarks/gpu_check.sh               # on one GPU, <= 6 minutes
#   benchmarks/gpu_check.sh --cpu-smoke   # CI-sized, on the CPU
# Python: $PYTHON, else this checkout's .venv, else python3. If featuregraph's compute side
# (torch, transformer_lens, sae_lens, duckdb) is not importable there, it installs it: from
# wheels in .whl/ when that folder exists (machines with no package index: carry them there),
# else from the package index into a fresh venv that reuses the machine's torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ "${1:-}" != "--cpu-smoke" ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  # A carried CPU venv cannot use the GPU: fall back to the machine's own python (its CUDA torch).
  PY=python3
fi
if ! "$PY" -P -c "import featuregraph.ingest.sweep, transformer_lens, duckdb" 2>/dev/null; then
  echo "gpu_check: installing featuregraph's compute side for $PY" >&2
  if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/fg-site .whl/*.whl
    export PYTHONPATH="/tmp/fg-site${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/fg-site .
  else
    "$PY" -m venv --system-site-packages /tmp/fg-venv
    /tmp/fg-venv/bin/pip install -q -e ".[ingest]"
    PY=/tmp/fg-venv/bin/python
  fi
fi
if ! "$PY" -P -c "import wandb" 2>/dev/null; then
  # sae_lens imports wandb for its training configs only; see benchmarks/gpu_env/wandb/__init__.py
  echo "gpu_check: wandb missing, using the stand-in in benchmarks/gpu_env" >&2
  export PYTHONPATH="$PWD/benchmarks/gpu_env${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -P -c "import featuregraph.ingest.sweep, sae_lens, duckdb" || { echo "gpu_check: featuregraph's compute side does not import" >&2; exit 1; }
export PYTHONUNBUFFERED=1
exec timeout 360 "$PY" benchmarks/gpu_check.py "$@"
