"""Reading and running a geosr model exported to ONNX (``geosr export MODEL -o model.onnx``): its metadata (the
card, the tile layout) and a small onnxruntime runner with the predictor's interface.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from geosr.checkpoint import ModelCard
from geosr.onnx import INPUT_NAME, OUTPUT_NAME, OnnxError, _first_line, _require

log = logging.getLogger("geosr.onnx")


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an ONNX file, each value parsed from JSON (kept as text where it is not JSON).

    Raises OnnxError when ``path`` is missing or not an ONNX model file.
    """
    onnx = _require("onnx")
    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise OnnxError(f"{path}: no such ONNX file") from None
    except IsADirectoryError:
        raise OnnxError(f"{path}: is a folder, not an ONNX file") from None
    except Exception:  # protobuf's DecodeError and friends
        raise OnnxError(f"{path}: not an ONNX model file (unreadable)") from None
    if not proto.graph.node:
        raise OnnxError(f"{path}: not an ONNX model file (no graph)")
    return {p.key: _parse(p.value) for p in proto.metadata_props}


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass(frozen=True, eq=False)
class OnnxPredictor:
    """An exported geosr model opened with onnxruntime: maps batches of tiles to super-resolved tiles.

    Call it with (B, bands, h, w) float32 values in ``input_range`` (the dynamic layout: [-1, 1], geosr's model range,
    so it serves ``geosr.tiling.tile_array`` as a ``Predictor`` does); it returns (B, bands_out, s*h, s*w) float32 in
    ``output_range``. It keeps no state between calls.
    """

    session: Any
    path: Path
    metadata: dict[str, Any]

    @cached_property
    def card(self) -> ModelCard:
        return ModelCard.from_dict(self.metadata["geosr_card"], source=str(self.path))

    @property
    def scale(self) -> int:
        return int(self.metadata["geosr_scale"])

    @property
    def input_range(self) -> tuple[float, float]:
        return tuple(self.metadata["geosr_input_range"])

    @property
    def output_range(self) -> tuple[float, float]:
        return tuple(self.metadata["geosr_output_range"])

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        return tuple(self.session.get_inputs()[0].shape)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, bands, h, w) float32 -> (B, bands_out, s*h, s*w) float32; see the class docstring for the ranges.

        Raises OnnxError, one line naming the file, for tiles of another band count or, in a fixed layout, another
        size, values outside the input range, and anything onnxruntime refuses.
        """
        x = np.ascontiguousarray(tiles, dtype=np.float32)
        self._check(x)
        try:
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        except Exception as exc:  # onnxruntime's own error types
            raise OnnxError(f"{self.path}: onnxruntime failed on tiles {x.shape} ({_first_line(exc)})") from None

    def _check(self, x: np.ndarray) -> None:
        bands = list(self.metadata.get("geosr_bands") or self.card.bands)
        if x.ndim != 4 or x.shape[1] != len(bands):
            raise OnnxError(
                f"{self.path}: takes (batch, {len(bands)}, height, width) tiles of its bands ({', '.join(bands)}), "
                f"not an array of shape {x.shape}; pick or repeat bands to {len(bands)}"
            )
        fixed = self.input_shape
        if any(isinstance(want, int) and want != got for want, got in zip(fixed, x.shape)):
            wanted = " x ".join(str(d) if isinstance(d, int) else "any" for d in fixed)
            raise OnnxError(
                f"{self.path}: a fixed input of {wanted} (batch, bands, height, width), not {x.shape}; tile with "
                f"tile_size={fixed[-1]} and batches that fit, or export a dynamic model (geosr export without "
                "--deepness)"
            )
        low, high = self.input_range
        if x.size:
            lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
            if lo < low - 1e-3 or hi > high + 1e-3:
                raise OnnxError(
                    f"{self.path}: input values {lo:.4g} to {hi:.4g} lie outside its input range [{low:g}, {high:g}]; "
                    "map raster values as its geosr_value_convention metadata says (docs/onnx.md)"
                )


def load_onnx(path: str | os.PathLike, *, threads: int | None = None) -> OnnxPredictor:
    """Open an ONNX file written by ``export_onnx`` with onnxruntime's CPU provider.

    threads: onnxruntime's intra-op threads (None: its default, all cores). Raises OnnxError when onnx or onnxruntime
    is missing, or ``path`` is not an ONNX file exported by geosr.
    """
    ort = _require("onnxruntime")
    path = Path(path)
    metadata = read_onnx_metadata(path)
    if "geosr_card" not in metadata:
        raise OnnxError(f"{path}: an ONNX model without geosr metadata; it was not exported by geosr export")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types
        raise OnnxError(f"{path}: onnxruntime cannot open this model ({_first_line(exc)})") from None
    return OnnxPredictor(session=session, path=path, metadata=metadata)
