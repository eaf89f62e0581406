#!/usr/bin/env bash
# Build the GPU bundle (benchmarks/gpu/bundle/part1: one device call beside the light checkout) on the development
# machine, after making the checkout light (benchmarks/gpu/travel.py; `travel.py restore` after the call).
# Needs the project's environment (rasterio re-encodes the images and cuts the cross-sensor crops from
# ../shared/data/geotiff, pip downloads the wheels); see docs/gpu.md.
#   bash benchmarks/gpu/prepare.sh [--travel full --max-parts 4] [--python-version 3.12] [--smoke --out DIR] [--geotiffs DIR] ...
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-python}"
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi
exec "$PY" benchmarks/gpu/prepare.py "$@"
