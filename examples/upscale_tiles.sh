#!/usr/bin/env bash
# Super-resolve every raster in a folder of tiles (searched recursively), keeping the folder layout.
#
#   examples/upscale_tiles.sh TILES_DIR OUT_DIR MODEL.safetensors [more geosr upscale options]
#
# Safe to rerun: existing outputs are kept (--skip-existing), so a rerun resumes an interrupted batch, and outputs
# only appear once complete. To redo outputs (a new model, other options), add --overwrite: it takes the place of
# --skip-existing and every output is written again; to redo only some, delete those outputs and rerun.
# Files that fail are reported and the rest go on; the exit code is 1 when any failed, 2 for a usage error, 130
# after Ctrl-C.
# On a machine with several GPUs, set GPUS=N (a whole number, 1 by default) to split the files between N processes
# (one GPU each); the exit code is then torchrun's (1 for any process that did not exit 0, Ctrl-C included).
# One process runs the whole folder, the model loaded once. On a GPU with many small tiles, try --files-in-flight 4:
# several files under way, their tiles sharing model calls (not yet measured on a GPU: docs/gpu.md).
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 TILES_DIR OUT_DIR MODEL.safetensors [geosr upscale options...]" >&2
    exit 2
fi
tiles=$1 out=$2 model=$3
shift 3

gpus=${GPUS:-1}
if ! [[ $gpus =~ ^[0-9]+$ ]] || ((10#$gpus < 1)); then
    echo "error: GPUS=$gpus: expected a whole number of at least 1 (the number of GPUs to use); unset it for one" >&2
    exit 2
fi
gpus=$((10#$gpus))

keep=--skip-existing # resume by default; --overwrite among the options redoes every output instead
for option in "$@"; do
    if [ "$option" = --overwrite ]; then
        keep=
    fi
done

if ! geosr=$(command -v geosr); then
    echo "error: geosr is not on PATH; activate the environment it is installed in (pip install geosr)" >&2
    exit 1
fi
if [ "$gpus" -gt 1 ]; then
    exec torchrun --standalone --nproc_per_node "$gpus" "$geosr" upscale "$tiles" -o "$out" --model "$model" \
        ${keep:+"$keep"} "$@"
fi
exec "$geosr" upscale "$tiles" -o "$out" --model "$model" ${keep:+"$keep"} "$@"
