"""Consistency with the input: correct a super-resolved image so that degrading it gives back the input.

geosr's models are trained for one degradation, D: MATLAB-style bicubic downsampling with antialiasing
(``geosr.resize.imresize`` by 1/scale, mirrored borders). A super-resolved image y of an input x is *consistent* when
D(y) = x. The model's output is close to that but not exactly: its colours and fine brightness drift a little. The
correction here is the exact projection onto the consistent images,

    y' = y + P (x - D y),    P = D^T (D D^T)^-1   (per axis: D is separable, so P is too),

the smallest change of y (least squares) that makes D(y') = x. It is applied per band in the model's range, where the
result is also clipped to [-1, 1]: projection and clipping alternate for ``iterations`` rounds, which converges to an
image that is consistent wherever the input allows it (an input pixel at the end of the range whose HR pixels all
lie at the end as well). Input pixels that are invalid (nodata, masked) put no constraint on the output: their
residual is set to zero.

D D^T is well conditioned for every integer scale (condition number about 2), so P is local: the correction at an
output pixel from the residual k input pixels away falls about three times per pixel (1e-4 of it at 8 pixels). So a
large raster is corrected in blocks of rows with ``halo`` input rows of context on each side (and panels of columns
with the same context), and the blocks agree with the whole-image projection to about 3^-halo of the residual: no
seams. At the raster's edges the mirrored borders of the degradation itself apply.

All sizes: ``scale`` is the integer factor; an LR (input) array is (bands, h, w), its HR (output) array
(bands, scale * h, scale * w).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .radiometry import MODEL_RANGE
from .resize import _weight_matrix

DEFAULT_ITERATIONS = 3
DEFAULT_HALO = 10  # input pixels of context per side of a block: leaves about 2e-5 of the residual
DEFAULT_BLOCK = 64  # input rows corrected by one projection in a stream


@functools.lru_cache(maxsize=64)
def _axis_operators(n: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(D, P) for one axis of ``n`` input pixels: D (n, scale * n) the degradation, P (scale * n, n) its projector."""
    d = _weight_matrix(scale * n, n, 1.0 / scale, True)  # (n, s n), rows sum to 1; resize's cached array
    p = d.T @ np.linalg.inv(d @ d.T)  # (s n, n)
    d32, p32 = d.astype(np.float32), p.astype(np.float32)
    d32.setflags(write=False)
    p32.setflags(write=False)
    return d32, p32


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """D(hr): the training degradation of (bands, s h, s w) float values to (bands, h, w), no rounding."""
    _, hh, ww = hr.shape
    if hh % scale or ww % scale:
        raise ValueError(f"HR size {hh} x {ww} is not a multiple of the scale {scale}")
    dh, _ = _axis_operators(hh // scale, scale)
    dw, _ = _axis_operators(ww // scale, scale)
    return dh @ hr.astype(np.float32) @ dw.T


def project(
    hr: np.ndarray,
    lr: np.ndarray,
    scale: int,
    valid: np.ndarray | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    value_range: tuple[float, float] | None = MODEL_RANGE,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The output ``hr`` (bands, s h, s w) corrected to be consistent with the input ``lr`` (bands, h, w).

    valid: (bands, h, w) bool, the input pixels that constrain the output (None: all). value_range: the range the
    output is clipped to after each projection (None: no clipping, one projection is then exact). device: where the
    matrix products run (the model's device: a GPU does them in microseconds). Returns a new float32 array; ``hr`` is
    not changed. Raises ValueError when the shapes do not match the scale.
    """
    b, h, w = lr.shape
    if hr.shape != (b, scale * h, scale * w):
        raise ValueError(f"HR shape {hr.shape} does not match LR shape {lr.shape} at x{scale}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    y, x, ok = _tensors(hr, lr, valid, torch.device(device))
    return _project(y, x, ok, scale, iterations, value_range).cpu().numpy()


def _tensors(hr: np.ndarray, lr: np.ndarray, valid: np.ndarray | None, device: torch.device):
    """float32 tensors on ``device``: a copy of ``hr`` (corrected in place), ``lr`` and ``valid``."""
    y = torch.from_numpy(np.array(hr, dtype=np.float32, copy=True)).to(device)
    x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)).to(device)
    ok = None if valid is None else torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)).to(device)
    return y, x, ok


def _project(
    y: torch.Tensor, x: torch.Tensor, valid: torch.Tensor | None, scale: int, iterations: int,
    value_range: tuple[float, float] | None,
) -> torch.Tensor:
    """``project`` on tensors, ``y`` corrected in place (and returned)."""
    b, h, w = x.shape
    dh, ph = _device_operators(h, scale, y.device)
    dw, pw = _device_operators(w, scale, y.device)
    if value_range is None:
        return _project_once(y, x, valid, dh, dw, ph, pw)
    lo, hi = value_range
    bands = None  # the bands still being corrected (None: all): a band that needed no clipping is exact already
    for _ in range(iterations):
        part = y if bands is None else y[bands]
        part = _project_once(part, x if bands is None else x[bands],
                             None if valid is None else (valid if bands is None else valid[bands]), dh, dw, ph, pw)
        clipped = (part.amin(dim=(1, 2)) < lo) | (part.amax(dim=(1, 2)) > hi)
        part.clamp_(lo, hi)
        if bands is not None:
            y[bands] = part
        bands = (torch.arange(b, device=y.device) if bands is None else bands)[clipped]
        if not len(bands):
            break
    return y


def _project_once(y, x, valid, dh, dw, ph, pw) -> torch.Tensor:
    """y + P (x - D y), in place in ``y``."""
    r = x - dh @ y @ dw.T  # (b, h, w) residual in the input's grid
    if valid is not None:
        r = torch.where(valid, r, 0.0)
    y += ph @ r @ pw.T
    return y


@functools.lru_cache(maxsize=128)
def _device_operators(n: int, scale: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    d, p = _axis_operators(n, scale)
    return torch.tensor(d, device=device), torch.tensor(p, device=device)


def residual(hr: np.ndarray, lr: np.ndarray, scale: int, valid: np.ndarray | None = None) -> float:
    """Mean absolute difference between ``lr`` and D(``hr``) over the valid input pixels (in ``lr``'s units)."""
    d = np.abs(degrade(hr, scale) - lr.astype(np.float32))
    if valid is not None:
        d = d[valid]
    return float(d.mean()) if d.size else 0.0


class RowStream:
    """The projection applied to an image that arrives as blocks of rows, seam-free and in bounded memory.

    Rows come in ``push`` calls of whole input rows: ``scale * k`` output rows with the ``k`` input rows under them
    (all columns of the panel being processed), from the image's first row on. The image is corrected in fixed blocks
    of ``block`` input rows (and of as many columns), each by a projection over a window reaching ``halo`` input
    pixels beyond it on each side (or to the image's edge), so that memory and work grow linearly with the width.
    The windows depend only on the block size, the halo and the image's size, never on
    how the rows were pushed: an image pushed whole and one pushed in strips give the same values, bit for bit.
    ``push`` returns the output rows of the blocks it completed (possibly none), ``finish`` the rest; the rows
    returned, in order, cover every pushed row once.
    """

    def __init__(
        self,
        scale: int,
        halo: int = DEFAULT_HALO,
        iterations: int = DEFAULT_ITERATIONS,
        value_range: tuple[float, float] | None = MODEL_RANGE,
        block: int = DEFAULT_BLOCK,
        device: str | torch.device = "cpu",
    ) -> None:
        if block < 1 or halo < 0:
            raise ValueError(f"block must be at least 1 and halo at least 0, got {block} and {halo}")
        self.scale = scale
        self.halo = halo
        self.iterations = iterations
        self.value_range = value_range
        self.block = block
        self.device = torch.device(device)
        self._hr: list[torch.Tensor] = []  # uncorrected output rows, buffered (b, s k, W) blocks, on ``device``
        self._lr: list[torch.Tensor] = []
        self._valid: list[torch.Tensor | None] = []
        self._start = 0  # input row of the buffer's first row
        self._done = 0  # input rows already returned
        self._rows = 0  # input rows pushed

    def push(self, hr, lr, valid=None) -> torch.Tensor:
        """Add ``lr`` (b, k, w) and its output rows ``hr`` (b, s k, s w), arrays or tensors (copied to the stream's
        device: callers may reuse their buffers); return the output rows now final, a float32 tensor there."""
        s = self.scale
        if hr.shape[1] != s * lr.shape[1] or hr.shape[2] != s * lr.shape[2]:
            raise ValueError(f"HR rows {tuple(hr.shape)} do not match LR rows {tuple(lr.shape)} at x{s}")
        self._hr.append(_copy(hr, torch.float32, self.device))
        self._lr.append(_copy(lr, torch.float32, self.device))
        self._valid.append(None if valid is None else _copy(valid, torch.bool, self.device))
        self._rows += lr.shape[1]
        # a block is final once ``halo`` rows below it have arrived (its window would not grow any more)
        ready = (self._rows - self.halo) // self.block * self.block
        return self._emit(ready, final=False)

    def finish(self) -> torch.Tensor:
        """The output rows not returned yet, corrected up to the image's (mirrored) bottom edge."""
        return self._emit(self._rows, final=True)

    def _emit(self, until: int, final: bool) -> torch.Tensor:
        s = self.scale
        if until <= self._done:
            b, w = (self._hr[0].shape[0], self._hr[0].shape[2]) if self._hr else (0, 0)
            return torch.zeros((b, 0, w), dtype=torch.float32, device=self.device)
        hr = torch.cat(self._hr, dim=1)
        lr = torch.cat(self._lr, dim=1)
        valid = None
        if any(v is not None for v in self._valid):
            valid = torch.cat(
                [torch.ones(x.shape, dtype=torch.bool, device=self.device) if v is None else v
                 for x, v in zip(self._lr, self._valid)], dim=1
            )
        parts = []
        for b0 in range(self._done, until, self.block):
            b1 = min(b0 + self.block, until) if final else b0 + self.block
            w0 = max(0, b0 - self.halo) - self._start  # the block's window, in buffer rows
            w1 = min(self._rows, b1 + self.halo) - self._start
            out = _project_columns(
                hr[:, s * w0 : s * w1], lr[:, w0:w1], s, None if valid is None else valid[:, w0:w1],
                self.iterations, self.value_range, self.block, self.halo,
            )
            first = b0 - self._start - w0
            parts.append(out[:, s * first : s * (first + b1 - b0)])
        self._done = until
        # keep what the next window needs: ``halo`` rows above the next block
        keep = max(self._start, self._done - self.halo) - self._start
        self._hr, self._lr = [hr[:, s * keep :]], [lr[:, keep:]]
        self._valid = [None if valid is None else valid[:, keep:]]
        self._start += keep
        return torch.cat(parts, dim=1)


def _copy(a, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A copy of an array or tensor as ``dtype`` on ``device``."""
    if isinstance(a, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)
    return a.to(device=device, dtype=dtype, copy=True)


def _project_columns(
    hr: torch.Tensor, lr: torch.Tensor, scale: int, valid: torch.Tensor | None, iterations: int,
    value_range: tuple[float, float] | None, block: int, halo: int,
) -> torch.Tensor:
    """``project`` of a block of rows (tensors on one device, where it runs) in blocks of ``block`` input columns,
    each over a window reaching ``halo`` columns beyond it: the operators stay (block + 2 halo) wide, so memory and
    work grow linearly with the width.

    Windows of the same width (all but those at the edges) share their operators and are corrected together, stacked
    along the band axis: a few large matrix products instead of many small ones, which keeps every core (or the GPU)
    busy."""
    s = scale
    b, h, w = lr.shape
    windows: dict[int, list[tuple[int, int, int, int]]] = {}  # width -> [(a, e, c0, c1)]
    step = block if w > block + 2 * halo else w  # a narrow block is one window
    for c0 in range(0, w, step):
        c1 = min(c0 + step, w)
        a, e = max(0, c0 - halo), min(w, c1 + halo)
        windows.setdefault(e - a, []).append((a, e, c0, c1))
    out = torch.empty_like(hr)
    for group in windows.values():
        ys = torch.cat([hr[:, :, s * a : s * e] for a, e, _, _ in group])  # (len(group) * b, s h, s width), a copy
        xs = torch.cat([lr[:, :, a:e] for a, e, _, _ in group])
        oks = None if valid is None else torch.cat([valid[:, :, a:e] for a, e, _, _ in group])
        ys = _project(ys, xs, oks, s, iterations, value_range)
        for i, (a, _, c0, c1) in enumerate(group):
            out[:, :, s * c0 : s * c1] = ys[i * b : (i + 1) * b, :, s * (c0 - a) : s * (c1 - a)]
    return out


def project_rows(
    hr: np.ndarray, lr: np.ndarray, scale: int, valid: np.ndarray | None = None, **kwargs
) -> np.ndarray:
    """``project`` of a whole image in the blocks of ``RowStream``: the values ``geosr upscale`` writes for it."""
    stream = RowStream(scale, **kwargs)
    first = stream.push(hr, lr, valid)
    return torch.cat([first, stream.finish()], dim=1).cpu().numpy()
