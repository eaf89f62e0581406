"""The model at inference: a generator loaded on a device at a precision, mapping batches of tiles.

``load_predictor(model, scale, device, precision)`` reads a model file (or the bundled model for a scale) and returns
a ``Predictor``: a stateless callable from (B, C, h, w) float32 tiles in the model's range [-1, 1] to
(B, C, s*h, s*w) float32, so one predictor serves any number of files and threads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geosr.checkpoint import ModelCard, default_model, load_generator, read_card, resolve_model
from geosr.device import autocast, resolve_device, resolve_precision
from geosr.errors import ModelFileError
from geosr.models.generator import Generator

log = logging.getLogger("geosr.predictor")


@dataclass(frozen=True, eq=False)
class Predictor:
    """A loaded generator on a device at a precision: maps batches of model-range tiles to super-resolved tiles.

    It holds no state between calls, so one predictor serves any number of files (and threads).
    """

    model: Generator
    card: ModelCard
    device: torch.device
    precision: str
    source: str

    @property
    def scale(self) -> int:
        return self.card.scale

    @property
    def channels(self) -> int:
        return self.card.config.in_channels

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda" or (self.device.type == "cpu" and self.precision != "fp32")

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, C, h, w) float32 in [-1, 1] -> (B, C, s*h, s*w) float32."""
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(self.device, self.precision):
            y = self.model(x)  # (B, C, s*h, s*w)
        return y.to("cpu", torch.float32, memory_format=torch.contiguous_format).numpy()  # one pass


def select_model(model: str | os.PathLike | None, scale: int | None) -> Path:
    """The model file for ``model`` (a path or a bundled model's name) or, when None, the bundled model for
    ``scale`` (4 when None too).

    Raises ModelFileError for a model that does not exist or is not a model file, and for one whose scale differs
    from ``scale``; only the file's header is read.
    """
    if model is None:
        return default_model(scale or 4)
    path = resolve_model(model)
    card = read_card(path)
    if scale is not None and card.scale != scale:
        raise ModelFileError(
            f"{path} is a x{card.scale} model but --scale {scale} asks for x{scale}; pass a x{scale} model "
            f"or --scale {card.scale}",
            option="--scale",
        )
    return path


def load_predictor(
    model: str | os.PathLike | None = None,
    scale: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    local_rank: int | None = None,
) -> Predictor:
    """Load a model file (or the bundled model for ``scale`` when ``model`` is None) for inference.

    device, precision: see geosr.device; local_rank: this process's GPU under torchrun (device 'auto' or 'cuda').
    Raises ModelFileError for a missing or invalid model file, or one whose scale differs from ``scale``;
    DeviceError for a device or precision this machine lacks.
    """
    path = select_model(model, scale)
    dev = resolve_device(device, local_rank)
    prec = resolve_precision(precision, dev)
    net, card = load_generator(path, device=dev)
    if dev.type == "cuda" or (dev.type == "cpu" and prec != "fp32"):
        net = net.to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every call has the same tile shape: pick the fastest kernels once
    log.info("model %s (x%d) on %s at %s", path, card.scale, dev, prec)
    return Predictor(net, card, dev, prec, Path(path).name)
