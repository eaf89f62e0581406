#!/usr/bin/env bash
# Build the GPU bundle (benchmarks/gpu/bundle/part1, part2, ...) on the development machine.
# Needs the project's environment (rasterio re-encodes the images and cuts the cross-sensor crops from
# ../shared/data/geotiff, pip downloads the wheels); see docs/gpu.md.
#   bash benchmarks/gpu/prepare.sh [--max-parts 3] [--python-version 3.12] [--smoke --out DIR] [--geotiffs DIR] ...
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
exec "$PY" benchmarks/gpu/prepare.py "$@"
