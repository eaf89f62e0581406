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
seams. At the raster's edges the mirrored borders of the degradation itself apply. On a CPU the windows take
shortcuts that leave every value as the plain products give it, bit for bit (``_window``): D's products skip its
zero weights, and P's products give the window's block, its ring only to a band that needs another round.

All sizes: ``scale`` is the integer factor; an LR (input) array is (bands, h, w), its HR (output) array
(bands, scale * h, scale * w).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from .radiometry import MODEL_RANGE
from .resize import _weight_matrix

DEFAULT_ITERATIONS = 3
DEFAULT_HALO = 10  # input pixels of context per side of a block: leaves about 2e-5 of the residual
DEFAULT_BLOCK = 64  # input rows corrected by one projection in a stream
# Input pixels of P's reach beyond a part of the ring that the ring check computes (_ring_inside); P's weights beyond
# it sum to under 1e-6 and are bounded instead (P's weights fall about three times per pixel)
RING_REACH = 12


@functools.lru_cache(maxsize=64)
def _axis_operators(n: int, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(D, P) for one axis of ``n`` input pixels: D (n, scale * n) the degradation, P (scale * n, n) its projector."""
    d = _weight_matrix(scale * n, n, 1.0 / scale, True)  # (n, s n), rows sum to 1; resize's cached array
    p = d.T @ np.linalg.inv(d @ d.T)  # (s n, n)
    d32, p32 = d.astype(np.float32), p.astype(np.float32)
    for m in (d32, p32):
        m.setflags(write=False)
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
    y = torch.from_numpy(np.array(hr, dtype=np.float32, copy=True)).to(device)  # a copy, corrected in place
    x = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)).to(device)
    ok = None if valid is None else torch.from_numpy(np.ascontiguousarray(valid, dtype=bool)).to(device)
    return _project(y, x, ok, scale, iterations, value_range).cpu().numpy()


class _Window(NamedTuple):
    """How a window of (s h, s w) output pixels is corrected (see ``_window``)."""

    dh: torch.Tensor  # (h, s h): D and P per axis
    dw: torch.Tensor  # (w, s w)
    ph: torch.Tensor  # (s h, h)
    pw: torch.Tensor  # (s w, w)
    bands: tuple | None  # blocks of the rows of dh and of dw with the columns of their nonzero weights, or None
    rows: slice  # the output rows and columns computed in every round (the others only as far as needed)
    cols: slice
    sums: float  # the largest row sum of |ph| times that of |pw|
    checks: tuple = ()  # the ring's parts with P's weights within reach of them (``_ring_checks``)
    tail: float = 0.0  # the most that P's weights out of reach add to P r in the ring, per unit of max |r|


@functools.lru_cache(maxsize=256)
def _window(
    h: int, w: int, scale: int, rows: tuple[int, int] | None, cols: tuple[int, int] | None, device: torch.device
) -> _Window:
    """The window of h x w input pixels whose output ``rows`` x ``cols`` (None: all) are used.

    Two shortcuts are taken where a check on random values (once per shape) finds that they give the values of the
    whole products bit for bit: D's products over its nonzero weights only (D is banded: some 4 s of the s h weights
    of a row are not zero, and a zero adds nothing to a sum taken in order), and P's products for the rows and
    columns used, the ring around them computed only when a later round needs it (``_correct``). They do where
    every piece runs through the same matrix-product kernel as the whole, which sums each element in the same order:
    Intel MKL on a CPU does. PyTorch sends very small products to a kernel of its own, and a GPU library picks its
    kernels by shape (there the products take microseconds anyway), so there the whole products run.
    """
    (dh, ph), (dw, pw) = (tuple(torch.tensor(m, device=device) for m in _axis_operators(n, scale)) for n in (h, w))
    sums = float(ph.double().abs().sum(dim=1).max() * pw.double().abs().sum(dim=1).max())
    full = _Window(dh, dw, ph, pw, None, slice(0, scale * h), slice(0, scale * w), sums)
    if device.type != "cpu":
        return full
    y = torch.rand((2, scale * h, scale * w), generator=torch.Generator().manual_seed(0)) * 2 - 1
    r = y[:, ::scale, ::scale].contiguous()
    banded = full._replace(bands=(_nonzero_blocks(h, scale), _nonzero_blocks(w, scale)))
    weighed = all((_axis_operators(n, scale)[0] != 0).any(axis=0).all() for n in (h, w))  # every column of D
    win = banded if weighed and torch.equal(_degraded(y, banded), dh @ y @ dw.T) else full
    if rows is None or cols is None:
        return win
    kept = win._replace(rows=slice(*rows), cols=slice(*cols))
    kept = kept._replace(**_ring_checks(kept, scale))
    whole, c = ph @ r @ pw.T, ph[kept.rows] @ r  # the products as _correct computes them
    pieces = [(c @ pw[kept.cols].T, whole[:, kept.rows, kept.cols])]
    for rs, cs in _ring(whole.shape[1:], kept.rows, kept.cols):
        pieces.append((ph[rs] @ r @ pw.T if cs == slice(None) else c @ pw[cs].T, whole[:, rs, cs]))
    return kept if all(torch.equal(a, b) for a, b in pieces) else win


def _ring_checks(win: _Window, scale: int) -> dict:
    """The ring check's parts (``_Window.checks``) and the bound on what it leaves out (``_Window.tail``).

    Each part of the ring (``_ring``) with the input rows (whole rows above or below the kept ones: rows of r) or
    columns (beside the kept rows: columns of ph r) within RING_REACH of it, and the weights of P there: (rows,
    columns, reach, weights), weights = ph[rows, reach] or pw[columns, reach].T. The rest adds to P r at an output
    pixel (i, j) of a part at most max |r| times sum |ph[i, out of reach]| * sum |pw[j, :]| (whole rows) or
    sum |ph[i, :]| * sum |pw[j, out of reach]| (beside); ``tail`` is the largest of these factors, from float64 sums.
    """
    ah, aw = win.ph.double().abs(), win.pw.double().abs()
    h, w = ah.shape[1], aw.shape[1]
    checks, tail = [], 0.0
    for rs, cs in _ring((ah.shape[0], aw.shape[0]), win.rows, win.cols):
        whole = cs == slice(None)
        a, n, near = (rs, h, ah) if whole else (cs, w, aw)
        reach = slice(max(0, a.start // scale - RING_REACH), min(n, -(-a.stop // scale) + RING_REACH))
        out = torch.ones(n, dtype=torch.bool)
        out[reach] = False
        left = float(near[a][:, out].sum(dim=1).max()) if bool(out.any()) else 0.0
        other = float((aw if whole else ah[win.rows]).sum(dim=1).max())  # the other axis's largest row sum
        tail = max(tail, left * other)
        weights = win.ph[rs, reach] if whole else win.pw[cs, reach].T
        checks.append((rs, cs, reach, weights.contiguous()))
    return {"checks": tuple(checks), "tail": tail}


@functools.lru_cache(maxsize=128)
def _nonzero_blocks(n: int, scale: int) -> tuple[tuple[int, int, int, int], ...]:
    """Blocks (i0, i1, k0, k1) of the rows of D for ``n`` input pixels: rows [i0, i1) have their nonzero weights
    in columns [k0, k1); about 48 output pixels per block, products large enough to run fast."""
    nonzero = _axis_operators(n, scale)[0] != 0
    first, last = nonzero.argmax(axis=1), scale * n - nonzero[:, ::-1].argmax(axis=1)
    step = max(1, 48 // scale)
    return tuple(
        (i, min(n, i + step), int(first[i : i + step].min()), int(last[i : i + step].max())) for i in range(0, n, step)
    )


def _degraded(y: torch.Tensor, win: _Window) -> torch.Tensor:
    """D y: (b, s h, s w) -> (b, h, w), dh @ y @ dw.T; over D's nonzero weights only where ``win.bands`` says so
    and y is finite (0 times an infinity is not 0: an infinity or NaN in y, which every column of D weighs, shows)."""
    if win.bands is not None:
        rows, cols = win.bands
        t = torch.cat([win.dh[i0:i1, k0:k1] @ y[:, k0:k1] for i0, i1, k0, k1 in rows], dim=1)  # (b, h, s w)
        d = torch.cat([t[:, :, k0:k1] @ win.dw[j0:j1, k0:k1].T for j0, j1, k0, k1 in cols], dim=2)
        if torch.isfinite(d.sum()):
            return d
    return win.dh @ y @ win.dw.T


def _project(
    y: torch.Tensor,
    x: torch.Tensor,
    valid: torch.Tensor | None,
    scale: int,
    iterations: int,
    value_range: tuple[float, float] | None,
    keep: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> torch.Tensor:
    """``project`` on tensors, ``y`` corrected in place (and returned). keep: ((r0, r1), (c0, c1)), the output rows
    and columns of ``y`` whose values the caller uses (None: all); elsewhere ``y`` may be left uncorrected."""
    b, h, w = x.shape
    win = _window(h, w, scale, *(keep or (None, None)), y.device)
    if value_range is None:
        y += win.ph @ _residual(y, x, valid, win) @ win.pw.T
        return y
    bands = None  # the bands still being corrected (None: all): a band that needed no clipping is exact already
    for i in range(iterations):
        part = y if bands is None else y[bands]
        r = _residual(
            part,
            x if bands is None else x[bands],
            None if valid is None else (valid if bands is None else valid[bands]),
            win,
        )
        if i == iterations - 1:  # the last round: only the values kept matter
            kept = part[:, win.rows, win.cols]
            kept += win.ph[win.rows] @ r @ win.pw[win.cols].T
            kept.clamp_(*value_range)
            clipped = torch.zeros(len(part), dtype=torch.bool, device=y.device)
        else:
            clipped = _correct(part, r, win, value_range)
        if bands is not None:
            y[bands] = part
        bands = (torch.arange(b, device=y.device) if bands is None else bands)[clipped]
        if not len(bands):
            break
    return y


def _residual(y: torch.Tensor, x: torch.Tensor, valid: torch.Tensor | None, win: _Window) -> torch.Tensor:
    """x - D y, (b, h, w) in the input's grid; zero where the input is not valid."""
    r = x - _degraded(y, win)
    return r if valid is None else torch.where(valid, r, 0.0)


def _correct(y: torch.Tensor, r: torch.Tensor, win: _Window, value_range: tuple[float, float]) -> torch.Tensor:
    """A round that may not be the last: y + P r clipped to the range, in place in ``y``; returns whether each band
    needed clipping anywhere (bool, (b,)): such a band goes on to another round, from all of its new values. The
    values kept (``win.rows`` x ``win.cols``) are always computed, the ring around them for the bands that go on or
    might, which a fast product with a proven error bound tells (``_ring_inside``): to the others it is of no use.
    """
    lo, hi = value_range
    rows, cols = win.rows, win.cols
    c = win.ph[rows] @ r  # (b, kept rows, w)
    kept = y[:, rows, cols]
    kept += c @ win.pw[cols].T
    inside = (kept.amin(dim=(1, 2)) >= lo) & (kept.amax(dim=(1, 2)) <= hi)
    ring = _ring(y.shape[1:], rows, cols)
    if ring and bool(inside.any()):
        inside &= _ring_inside(y, r, c, win, value_range)
    clipped = torch.zeros_like(inside)
    rest = (~inside).nonzero()[:, 0]  # the bands whose ring is needed exactly
    if len(rest):
        every = len(rest) == len(y)
        part, r, c = (y, r, c) if every else (y[rest], r[rest], c[rest])
        for rs, cs in ring:  # whole rows above and below the kept ones; the kept rows beside the kept columns
            part[:, rs, cs] += win.ph[rs] @ r @ win.pw.T if cs == slice(None) else c @ win.pw[cs].T
        clipped[rest] = (part.amin(dim=(1, 2)) < lo) | (part.amax(dim=(1, 2)) > hi)
        part.clamp_(lo, hi)
        if not every:
            y[rest] = part
    kept.clamp_(lo, hi)
    return clipped


def _ring(shape: torch.Size, rows: slice, cols: slice) -> list[tuple[slice, slice]]:
    """The parts of an (H, W) window around rows x cols that are not empty: whole rows above and below them
    (a row slice, slice(None)), and beside them (``rows``, a column slice)."""
    parts = [
        (slice(0, rows.start), slice(None)),
        (slice(rows.stop, shape[0]), slice(None)),
        (rows, slice(0, cols.start)),
        (rows, slice(cols.stop, shape[1])),
    ]
    return [(rs, cs) for rs, cs in parts if (rs.stop > rs.start if cs == slice(None) else cs.stop > cs.start)]


def _ring_inside(y, r, c, win: _Window, value_range: tuple[float, float]) -> torch.Tensor:
    """Whether y + P r surely lies inside the range in the ring around the kept values, per band (bool, (b,)); c:
    the kept rows of P r.

    Computed over P's weights within reach of each part of the ring (``win.checks``), in float32 with denormal
    numbers flushed to zero (the corners of P hold values below 1e-38, slow on a CPU). Any two float32 evaluations
    of P r differ by at most 2 (g1 + g2 + g1 g2) |ph| |r| |pw|^T plus underflow terms below 2^-100, g = n u / (1 - n u)
    for sums of n terms, u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms, 3.1), and
    |ph| |r| |pw|^T <= max |r| ``win.sums``; the weights out of reach add at most (1 + g1) max |r| ``win.tail`` (the
    kept rows of P r, c, are at most (1 + g1) times |ph| |r|). A band counts as inside only with both margins, and a
    few ulps more, to spare.
    """
    lo, hi = value_range
    g1, g2 = (n * 2.0**-24 / (1 - n * 2.0**-24) for n in (win.ph.shape[1], win.pw.shape[1]))
    most_r = r.abs().amax(dim=(1, 2))
    bound = (2 * (g1 + g2 + g1 * g2) * win.sums + (1 + g1) * win.tail) * (1 + 2.0**-20) * most_r + 2.0**-100
    margin = bound + 2.0**-20 * max(1.0, abs(lo), abs(hi))  # (b,)
    inside = torch.ones(len(y), dtype=torch.bool, device=y.device)
    with _flush_denormals(y.device):
        for rs, cs, reach, weights in win.checks:
            v = weights @ (r[:, reach] @ win.pw.T) if cs == slice(None) else c[:, :, reach] @ weights
            v += y[:, rs, cs]
            inside &= (v.amin(dim=(1, 2)) >= lo + margin) & (v.amax(dim=(1, 2)) <= hi - margin)  # aminmax: 6x slower
    return inside


@contextlib.contextmanager
def _flush_denormals(device: torch.device) -> Iterator[None]:
    """Denormal float32 numbers flushed to zero in this thread on a CPU (elsewhere a no-op), then as before."""
    if device.type != "cpu":
        yield
        return
    was = bool(torch.tensor(2.0**-140) * 1.0 == 0)  # already flushing: a denormal number does not survive
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not was:
            torch.set_flush_denormal(False)


def residual(hr: np.ndarray, lr: np.ndarray, scale: int, valid: np.ndarray | None = None) -> float:
    """Mean absolute difference between ``lr`` and D(``hr``) over the valid input pixels (in ``lr``'s units)."""
    d = np.abs(degrade(hr, scale) - lr.astype(np.float32))
    if valid is not None:
        d = d[valid]
    return float(d.mean()) if d.size else 0.0
