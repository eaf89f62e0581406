"""The metadata of an exported ONNX model (``geosr.onnx``): geosr's keys (the model card, scale, bands, tiling, value
ranges and convention) and the keys QGIS's Deepness reads; every value JSON text.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from geosr.checkpoint import ModelCard
from geosr.version import __version__

# The Deepness model type of a super-resolution model (deepness.processing.models.superresolution.Superresolution).
DEEPNESS_MODEL_TYPE = "Superresolution"


def geosr_metadata(card: ModelCard, *, tile: int, overlap: int, layout: str) -> dict[str, str]:
    """The geosr keys of an exported model's metadata, each value JSON text.

    geosr_card: the model card whole (as in the model file); geosr_name, geosr_scale, geosr_bands (input band
    names), geosr_tile_size and geosr_overlap (recommended, input pixels); geosr_input_range and geosr_output_range
    (the graph's value ranges); geosr_value_convention (how raster values map to the input range); geosr_layout;
    geosr_version (the geosr that exported it; the card keeps the one that trained it).
    """
    unit = layout == "deepness"
    rng = [0.0, 1.0] if unit else [-1.0, 1.0]
    if unit:
        convention = (
            "inputs and outputs in [0, 1]: uint8 0..255 maps to v / 255 (the graph maps 0..1 to geosr's "
            "-1..1 and back); outputs times 255 are uint8 values, unrounded"
        )
    else:
        convention = (
            "inputs and outputs in [-1, 1]: uint8 0..255 maps linearly to -1..1 (v / 127.5 - 1, back: "
            "(y + 1) * 127.5 rounded); other dtypes map a global per-band value range (low, high) linearly "
            "to -1..1; outputs are clamped to [-1, 1]"
        )
    values: dict[str, Any] = {
        "geosr_card": dataclasses.replace(card, tile_size=tile, overlap=overlap).to_dict(),
        "geosr_name": card.name,
        "geosr_scale": card.scale,
        "geosr_bands": card.bands,
        "geosr_tile_size": tile,
        "geosr_overlap": overlap,
        "geosr_input_range": rng,
        "geosr_output_range": rng,
        "geosr_value_convention": convention,
        "geosr_layout": layout,
        "geosr_version": __version__,
    }
    return {key: json.dumps(value, sort_keys=True) for key, value in values.items()}


def deepness_metadata(card: ModelCard, *, tile: int, resolution_cm: float | None = None) -> dict[str, str]:
    """The keys QGIS's Deepness reads from an ONNX model's metadata (``ModelBase.get_metadata_*``), JSON text.

    tiles_overlap is 0: Deepness's super-resolution processor pastes each tile's whole output at the tile's stride,
    so any overlap fails there (docs/onnx.md). The standardization is the identity: the graph takes Deepness's
    uint8 / 255 as it is. ``tiles_size`` repeats ``tile_size`` under the name Deepness's documentation uses.
    """
    bands = card.config.in_channels
    values: dict[str, Any] = {
        "model_type": DEEPNESS_MODEL_TYPE,
        "tile_size": tile,
        "tiles_size": tile,
        "tiles_overlap": 0,
        "standardization_mean": [0.0] * bands,
        "standardization_std": [1.0] * bands,
    }
    if resolution_cm is not None:
        values["resolution"] = float(resolution_cm)
    return {key: json.dumps(value) for key, value in values.items()}
