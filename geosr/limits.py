"""The fixed choices and bounds of geosr's options, in a module that imports nothing heavy.

Their owners re-export them (``geosr.models.generator.SCALES``, ``geosr.raster.COMPRESSIONS``,
``geosr.tiling.MIN_TILE`` / ``MAX_TILE``, ``geosr.models.ATTENTIONS`` / ``REFINERS``,
``geosr.checkpoint.default_overlap``); the command line and ``geosr train``'s settings read them from here so that
their option definitions, and so ``geosr --help`` and ``geosr train --help``, need no PyTorch.
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
