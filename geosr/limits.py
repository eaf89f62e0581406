"""The fixed choices and bounds of geosr's options, in a module that imports nothing heavy.

Their owners re-export them (``geosr.models.generator.SCALES``, ``geosr.raster.COMPRESSIONS``,
``geosr.tiling.MIN_TILE`` / ``MAX_TILE``); the command line reads them from here so that its option definitions, and
so ``geosr --help``, need neither PyTorch nor rasterio nor numpy.
"""

SCALES = (2, 3, 4)  # the integer factors a DEGAN generator upsamples by
COMPRESSIONS = ("deflate", "zstd", "lzw", "none")  # GeoTIFF codecs of the output
MIN_TILE = 8  # input pixels: the refiner halves a tile twice and its transformer needs a few tokens
MAX_TILE = 4096
