#!/usr/bin/env bash
# Super-resolve every raster in a folder of tiles (searched recursively), keeping the folder layout.
#
#   examples/upscale_tiles.sh TILES_DIR OUT_DIR MODEL.safetensors [more geosr upscale options]
#
# Safe to rerun: --skip-existing resumes an interrupted batch, and outputs only appear once complete.
# Files that fail are reported and the rest go on; the exit code is 1 when any failed.
# On a machine with several GPUs, set GPUS=N to split the files between N processes (one GPU each).
# One process runs the whole folder, the model loaded once. On a GPU with many small tiles, try --files-in-flight 4:
# several files under way, their tiles sharing model calls (not yet measured on a GPU: docs/gpu.md).
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 TILES_DIR OUT_DIR MODEL.safetensors [geosr upscale options...]" >&2
    exit 2
fi
tiles=$1 out=$2 model=$3
shift 3

if [ "${GPUS:-1}" -gt 1 ]; then
    exec torchrun --standalone --nproc_per_node "$GPUS" "$(command -v geosr)" upscale "$tiles" -o "$out" \
        --model "$model" --skip-existing "$@"
fi
exec geosr upscale "$tiles" -o "$out" --model "$model" --skip-existing "$@"
