#!/usr/bin/env bash
# The one command on the GPU machine, from the repository root, with one bundle part carried:
#   bash benchmarks/gpu/run.sh                       # results in $OUT (the device tool sets it)
#   GEOSR_GPU_SMOKE=1 bash benchmarks/gpu/run.sh --device cpu --out /tmp/gpu-out   # a tiny run on a CPU
# Stages the part, installs (once), measures, trains, exports and evaluates as far as the staged parts allow;
# see benchmarks/gpu/run.py and docs/gpu.md. Needs only a python3 with PyTorch.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY="${GEOSR_GPU_PYTHON:-python3}"
exec "$PY" benchmarks/gpu/run.py "$@"
