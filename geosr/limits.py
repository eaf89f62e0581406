"""The fixed choices and bounds of geosr's options, in a module that imports nothing heavy.

Every module imports them from here, and only from here: the command line and ``geosr train``'s settings too, so
that their option definitions, and so ``geosr --help`` and ``geosr train --help``, need no PyTorch.
"""

SCALES = (2, 3, 4)  # the integer factors a DEGAN generator upsamples by
COMPRESSIONS = ("deflate", "zstd", "lzw", "none")  # GeoTIFF codecs of the output
MIN_TILE = 8  # input pixels: the refiner halves a tile twice and its transformer needs a few tokens
MAX_TILE = 4096
ATTENTIONS = ("none", "se", "cam", "sam", "cbam")  # the generator's attention block (the paper's Table 4)
REFINERS = ("none", "unet", "unet-transformer")  # its refiner (Table 5)


def default_overlap(tile_size: int) -> int:
    """The overlap a card recommends for ``tile_size`` when none is given: a quarter of the tile."""
    return tile_size // 4


# Output pixels per second of `geosr upscale` end to end, as geosr measured them (README, "Speed"), for degan-x4 at
# its card's settings. On a CPU, per core and by the precision the model runs at: bf16 where the CPU computes it
# natively (AMX: one core of the development CPU did the 791 x 718 example at x4 in 71 s, 0.13 output Mpx/s), fp32
# elsewhere (an Ice Lake Xeon without AMX: the same example in 128-157 s on two cores, 0.029-0.036 per core; fp32 on
# the AMX CPU measured the same within 10 %). One NVIDIA H200: about 3 Mpx/s. They size the work-size guard, not
# promises: a file whose estimate is past a day needs --yes (or --max-pixels) before geosr starts it.
CPU_OUTPUT_PX_PER_S_PER_CORE = {"bf16": 0.13e6, "fp32": 0.032e6}
GPU_OUTPUT_PX_PER_S = 3.0e6
# The work per output pixel of a generator of degan's size at each scale, relative to x4: FLOPs at a 64-px tile of
# 3282 (x2), 2190 (x3) and 1968 (x4) GFLOP per output Mpx (benchmarks/common.py count_flops). The trunk runs on input
# pixels, so the fewer output pixels each input pixel gives, the more each output pixel costs.
SCALE_COST = {2: 1.67, 3: 1.11, 4: 1.0}
DAY_S = 24 * 3600


def output_rate(
    device_type: str, cores: int, self_ensemble: bool = False, *, native_bf16: bool = False, scale: int = 4
) -> float:
    """The output pixels per second to expect on ``device_type`` ("cuda" or "cpu" with ``cores``), for a model of
    degan's size at ``scale``; native_bf16: the model runs in bf16 on a CPU that computes it natively (AMX)."""
    if device_type == "cuda":
        rate = GPU_OUTPUT_PX_PER_S
    else:
        rate = CPU_OUTPUT_PX_PER_S_PER_CORE["bf16" if native_bf16 else "fp32"] * max(1, cores)
    rate /= SCALE_COST.get(scale, 1.0)
    return rate / 8 if self_ensemble else rate


def day_of_work(
    device_type: str, cores: int, self_ensemble: bool = False, *, native_bf16: bool = False, scale: int = 4
) -> int:
    """The output pixels one file may have before geosr asks for --yes: a day's work at ``output_rate``."""
    return int(output_rate(device_type, cores, self_ensemble, native_bf16=native_bf16, scale=scale) * DAY_S)
