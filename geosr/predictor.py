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

from geosr.bundled import default_model, resolve_model
from geosr.checkpoint import ModelCard, load_generator, model_sha256, read_card
from geosr.device import autocast, resolve_device, resolve_precision, to_device
from geosr.errors import ModelFileError, NotEnoughMemory, one_line
from geosr.models.generator import Generator

log = logging.getLogger("geosr.predictor")


@dataclass(frozen=True, eq=False)
class Predictor:
    """A loaded generator on a device at a precision: maps batches of model-range tiles to super-resolved tiles.

    It holds no state between calls, so one predictor serves any number of files (and threads). ``model_sha256`` is
    the SHA-256 of the model file it was loaded from (None for a model built in memory), recorded in outputs.
    """

    model: Generator
    card: ModelCard
    device: torch.device
    precision: str
    source: str
    self_ensemble: bool = False  # average the outputs of the 8 flips and transposes of each tile (8x the compute)
    model_sha256: str | None = None  # of the model file's bytes (geosr.checkpoint.model_sha256)
    path: str | None = None  # the model file (None for a model built in memory): where other processes load it

    def __repr__(self) -> str:  # the generator's module tree is thousands of characters
        params = sum(p.numel() for p in self.model.parameters())
        ensemble = ", self_ensemble" if self.self_ensemble else ""
        return (
            f"<geosr model {self.source}: x{self.scale}, {self.channels} bands, {params / 1e6:.2f} M parameters, "
            f"on {self.device} in {self.precision}{ensemble}>"
        )

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
        """(B, C, h, w) float32 in [-1, 1] -> (B, C, s*h, s*w) float32, numpy in and out (see ``run``)."""
        x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))
        return self.run(x).to("cpu", memory_format=torch.contiguous_format).numpy()

    def run(self, tiles: torch.Tensor, spread: bool = False):
        """(B, C, h, w) float32 tiles in [-1, 1], on any device -> (B, C, s*h, s*w) float32 on the model's device.

        The output stays where the model computed it, so that blending and the consistency correction run there
        too (geosr.strips). spread: return (mean, spread) of the self-ensemble instead (``ensemble_spread``; the
        8 passes whatever ``self_ensemble`` says). Raises NotEnoughMemory (naming the batch, the tile and the
        options to lower) when the device runs out of memory.
        """
        try:
            x = to_device(tiles, self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), autocast(self.device, self.precision):
                if spread:
                    return ensemble_spread(self.model, x, self.channels_last)  # (B, C, s*h, s*w) twice
                y = geometric_ensemble(self.model, x, self.channels_last) if self.self_ensemble else self.model(x)
            return y.to(torch.float32, memory_format=torch.contiguous_format)  # (B, C, s*h, s*w)
        except (MemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            x = y = None  # noqa: F841 - let the allocator have the memory back before the next file
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            b, _, h, w = tiles.shape
            raise NotEnoughMemory(
                f"out of memory running the model on {self.device.type} for {b} tile(s) of {h} x {w} input pixels "
                f"at x{self.scale} ({one_line(exc, 160)}); use a smaller --batch-size or --tile-size, or a machine "
                "with more memory",
                option="--batch-size" if b > 1 else "--tile-size",
            ) from None


def _dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The k-th (0..7) of the square's 8 symmetries on the last two axes (bit 2: transpose, bit 0: flip the columns,
    bit 1: flip the rows; the transpose first), or its inverse (the flips first)."""
    flips = [dim for bit, dim in ((1, -1), (2, -2)) if k & bit]
    if k & 4 and not inverse:
        x = x.transpose(-1, -2)
    if flips:
        x = x.flip(flips)
    if k & 4 and inverse:
        x = x.transpose(-1, -2)
    return x


def geometric_ensemble(model: torch.nn.Module, x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """The mean of the model's outputs for the 8 flips and transposes of ``x``, each turned back (the "self-ensemble"
    of the super-resolution literature, EDSR+ and after): (B, C, h, w) -> (B, C, s*h, s*w) float32, contiguous.
    Eight forward passes; summed in float32 whatever the precision of the passes."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    total = None
    for k in range(8):
        y = _dihedral(model(_dihedral(x, k).contiguous(memory_format=fmt)), k, inverse=True)
        y = y.to(torch.float32, memory_format=torch.contiguous_format)
        total = y if total is None else total.add_(y)
    return total.div_(8)


def ensemble_spread(
    model: torch.nn.Module, x: torch.Tensor, channels_last: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``geometric_ensemble``'s mean (the same float32 sums, so the same values) and the spread of its 8 passes: the
    mean over the passes of |pass - mean|, per pixel and band, in the model's range (geosr.uncertainty turns it into
    an error map). Both (B, C, s*h, s*w) float32, contiguous; the 8 passes are held at once (8x a tile's output)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    passes = []
    for k in range(8):
        y = _dihedral(model(_dihedral(x, k).contiguous(memory_format=fmt)), k, inverse=True)
        passes.append(y.to(torch.float32, memory_format=torch.contiguous_format))
    total = passes[0].clone()
    for y in passes[1:]:
        total.add_(y)
    mean = total.div_(8)
    spread = torch.zeros_like(mean)
    for y in passes:
        spread.add_((y - mean).abs_())
    return mean, spread.div_(8)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory ran out: Python's MemoryError, PyTorch's OutOfMemoryError (CUDA), the CPU
    allocator's and the MPS backend's RuntimeError, and oneDNN's "could not create a primitive" on the CPU, which is
    how it reports that the memory for a convolution's scratchpad could not be had (the message keeps its text)."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return any(
        s in text
        for s in ("out of memory", "can't allocate memory", "cannot allocate memory", "could not create a primitive")
    )


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
            f"{path} is a x{card.scale} model but --scale={scale} asks for x{scale}; pass a x{scale} model "
            f"or --scale={card.scale}",
            option="--scale",
        )
    return path


def load_predictor(
    model: str | os.PathLike | None = None,
    scale: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    local_rank: int | None = None,
    self_ensemble: bool = False,
) -> Predictor:
    """Load a model file (or the bundled model for ``scale`` when ``model`` is None) for inference.

    device, precision: see geosr.device; local_rank: this process's GPU under torchrun (device 'auto' or 'cuda');
    self_ensemble: every tile runs 8 times, flipped and transposed, and the outputs are averaged
    (``geometric_ensemble``: higher PSNR for 8 times the compute).
    The predictor records the SHA-256 of the model file (``model_sha256``). Raises ModelFileError for a missing or
    invalid model file, one whose scale differs from ``scale`` or one that changed while it was loaded; DeviceError
    for a device or precision this machine lacks.
    """
    path = select_model(model, scale)
    dev = resolve_device(device, local_rank)
    prec = resolve_precision(precision, dev)
    channels_last = dev.type == "cuda" or (dev.type == "cpu" and prec != "fp32")
    # the weights laid out as they are converted: no second pass over them
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # the file's SHA-256, once per load, for the outputs' provenance: the bytes hashed are the bytes loaded unless
    # the file was rewritten or replaced in between, which its identity before and after tells
    before = _identity(path)
    net, card = load_generator(path, device=dev, memory_format=fmt)
    sha256 = model_sha256(path)
    if _identity(path) != before:
        raise ModelFileError(
            f"{path}: the model file changed while it was loaded (being written or replaced?); "
            "load it again once it is complete"
        )
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every call has the same tile shape: pick the fastest kernels once
    log.info("model %s (x%d) on %s at %s%s", path, card.scale, dev, prec, ", self-ensemble" if self_ensemble else "")
    return Predictor(net, card, dev, prec, Path(path).name, self_ensemble, sha256, str(Path(path).resolve()))


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, modification time in ns) of a file, what changes when it is rewritten or replaced; None
    when it cannot be read (the load that follows says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns
