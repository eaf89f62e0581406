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


# Output pixels per second of `geosr upscale` end to end, as geosr measured them (README, "Speed"): one core of the
# development CPU runs degan-x4 in bf16 at about 0.13 output Mpx/s (the 791 x 718 example at x4 in 71 s), and one
# NVIDIA H200 at about 3 Mpx/s. They size the work-size guard, not promises: a file whose estimate is past a day
# needs --yes (or --max-pixels) before geosr starts it.
CPU_OUTPUT_PX_PER_S_PER_CORE = 0.13e6
GPU_OUTPUT_PX_PER_S = 3.0e6
DAY_S = 24 * 3600


def output_rate(device_type: str, cores: int, self_ensemble: bool = False) -> float:
    """The output pixels per second to expect on ``device_type`` ("cuda" or "cpu" with ``cores``)."""
    rate = GPU_OUTPUT_PX_PER_S if device_type == "cuda" else CPU_OUTPUT_PX_PER_S_PER_CORE * max(1, cores)
    return rate / 8 if self_ensemble else rate


def day_of_work(device_type: str, cores: int, self_ensemble: bool = False) -> int:
    """The output pixels one file may have before geosr asks for --yes: a day's work at ``output_rate``."""
    return int(output_rate(device_type, cores, self_ensemble) * DAY_S)
