"""The consistency projection of a raster that arrives as rows: blocks with a halo of context, seam-free.

geosr.consistency projects one window; ``RowStream`` takes the output rows of a panel as the strip loop finishes them
(geosr.strips) and corrects them in fixed blocks of rows, each over a window reaching ``halo`` input pixels beyond
it, and each block in panels of columns the same way (``_project_columns``), so memory and work grow linearly with
the raster. ``project_rows`` corrects a whole image in the same blocks: the values ``geosr upscale`` writes for it.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch

from geosr.consistency import DEFAULT_BLOCK, DEFAULT_HALO, DEFAULT_ITERATIONS, _project
from geosr.device import use_intra_op_threads
from geosr.radiometry import MODEL_RANGE
from geosr.tiling import even_splits


class RowStream:
    """The projection applied to an image that arrives as blocks of rows, seam-free and in bounded memory.

    Rows come in ``push`` calls of whole input rows: ``scale * k`` output rows with the ``k`` input rows under them
    (all columns of the panel being processed), from the image's first row on. The image is corrected in fixed blocks
    of ``block`` input rows (and of as many columns), each by a projection over a window reaching ``halo`` input
    pixels beyond it on each side (or to the image's edge), so that memory and work grow linearly with the width.
    The windows depend only on the block size, the halo and the image's size, never on how the rows were pushed: an
    image pushed whole and one pushed in strips give the same values, bit for bit. ``push`` returns the output rows
    of the blocks it completed (possibly none), ``finish`` the rest; the rows returned cover every pushed row once.

    workers: on a CPU, the threads that correct a block's windows together (the calling thread and workers - 1
    helpers, each on one intra-op thread): the windows are independent, so the values are the same for any number.
    """

    def __init__(
        self,
        scale: int,
        halo: int = DEFAULT_HALO,
        iterations: int = DEFAULT_ITERATIONS,
        value_range: tuple[float, float] | None = MODEL_RANGE,
        block: int = DEFAULT_BLOCK,
        device: str | torch.device = "cpu",
        workers: int = 1,
    ) -> None:
        if block < 1 or halo < 0 or workers < 1:
            raise ValueError(
                f"block and workers must be at least 1 and halo at least 0, got {block}, {workers} and {halo}"
            )
        self.scale, self.halo, self.iterations, self.value_range = scale, halo, iterations, value_range
        self.block, self.device = block, torch.device(device)
        self.workers = workers if self.device.type == "cpu" else 1  # a GPU's products take microseconds
        self._hr: torch.Tensor | None = None  # the uncorrected output rows held, (b, s k, W), on ``device``
        self._lr: torch.Tensor | None = None
        self._valid: torch.Tensor | None = None  # None while every input pixel pushed is valid
        self._start = 0  # input row of the buffer's first row
        self._done = 0  # input rows already returned
        self._rows = 0  # input rows pushed

    def push(self, hr, lr, valid=None) -> torch.Tensor:
        """Add ``lr`` (b, k, w) and its output rows ``hr`` (b, s k, s w), arrays or tensors (copied to the stream's
        device: callers may reuse their buffers); return the output rows now final, a float32 tensor there."""
        s = self.scale
        if hr.shape[1] != s * lr.shape[1] or hr.shape[2] != s * lr.shape[2]:
            raise ValueError(f"HR rows {tuple(hr.shape)} do not match LR rows {tuple(lr.shape)} at x{s}")
        if valid is not None or self._valid is not None:  # rows pushed without a mask are all valid
            held = (
                self._valid
                if self._valid is not None
                else torch.ones(
                    (lr.shape[0], 0 if self._lr is None else self._lr.shape[1], lr.shape[2]),
                    dtype=torch.bool,
                    device=self.device,
                )
            )
            self._valid = _joined(
                held, torch.ones(lr.shape, dtype=torch.bool) if valid is None else valid, torch.bool, self.device
            )
        self._hr = _joined(self._hr, hr, torch.float32, self.device)  # one copy of the new rows: the caller's stay
        self._lr = _joined(self._lr, lr, torch.float32, self.device)
        self._rows += lr.shape[1]
        # a block is final once ``halo`` rows below it have arrived (its window would not grow any more)
        ready = (self._rows - self.halo) // self.block * self.block
        return self._emit(ready, final=False)

    def finish(self) -> torch.Tensor:
        """The output rows not returned yet, corrected up to the image's (mirrored) bottom edge."""
        return self._emit(self._rows, final=True)

    def _emit(self, until: int, final: bool) -> torch.Tensor:
        s = self.scale
        hr, lr, valid = self._hr, self._lr, self._valid
        if until <= self._done:
            return torch.zeros((0, 0, 0) if hr is None else (hr.shape[0], 0, hr.shape[2]), device=self.device)
        parts = []
        for b0 in range(self._done, until, self.block):
            b1 = min(b0 + self.block, until) if final else b0 + self.block
            w0 = max(0, b0 - self.halo) - self._start  # the block's window, in buffer rows
            w1 = min(self._rows, b1 + self.halo) - self._start
            first = b0 - self._start - w0  # the block's first row in its window
            parts.append(
                _project_columns(
                    hr[:, s * w0 : s * w1],
                    lr[:, w0:w1],
                    s,
                    None if valid is None else valid[:, w0:w1],
                    self.iterations,
                    self.value_range,
                    self.block,
                    self.halo,
                    slice(s * first, s * (first + b1 - b0)),
                    self.workers,
                )
            )
        self._done = until
        # keep what the next window needs: ``halo`` rows above the next block
        keep = max(self._start, self._done - self.halo) - self._start
        self._hr, self._lr = hr[:, s * keep :], lr[:, keep:]
        self._valid = None if valid is None else valid[:, keep:]
        self._start += keep
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _joined(held: torch.Tensor | None, rows, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The rows ``held`` and below them a copy of ``rows`` (an array or a tensor) as ``dtype`` on ``device``."""
    new = torch.as_tensor(np.ascontiguousarray(rows) if isinstance(rows, np.ndarray) else rows)
    new = new.to(device=device, dtype=dtype)
    return new.clone() if held is None else torch.cat([held, new.to(device=held.device)], dim=1)


def _project_columns(
    hr: torch.Tensor,
    lr: torch.Tensor,
    scale: int,
    valid: torch.Tensor | None,
    iterations: int,
    value_range: tuple[float, float] | None,
    block: int,
    halo: int,
    rows: slice,
    workers: int = 1,
) -> torch.Tensor:
    """``project`` of a window of rows (tensors on one device, where it runs) in blocks of ``block`` input columns,
    each over a window reaching ``halo`` columns beyond it: the operators stay (block + 2 halo) wide, so memory and
    work grow linearly with the width. Returns the output ``rows`` (a slice of ``hr``'s rows) of the result.

    Windows of the same width with their block at the same place (all but those at the edges) share their operators
    and are corrected together, stacked along the band axis: a few large matrix products instead of many small ones.
    With ``workers`` > 1 the stack is cut into that many parts (whole windows), corrected on as many threads."""
    s = scale
    b, _, w = lr.shape
    windows: dict[tuple[int, int, int], list[tuple[int, int, int, int]]] = {}  # (width, block) -> [(a, e, c0, c1)]
    step = block if w > block + 2 * halo else w  # a narrow block is one window
    for c0 in range(0, w, step):
        c1 = min(c0 + step, w)
        a, e = max(0, c0 - halo), min(w, c1 + halo)
        windows.setdefault((e - a, c0 - a, c1 - a), []).append((a, e, c0, c1))
    out = hr.new_empty((b, rows.stop - rows.start, s * w))

    def correct(group: list[tuple[int, int, int, int]], k0: int, k1: int) -> None:
        ys = torch.cat([hr[:, :, s * a : s * e] for a, e, _, _ in group])  # (len(group) * b, s h, s width), a copy
        xs = torch.cat([lr[:, :, a:e] for a, e, _, _ in group])
        oks = None if valid is None else torch.cat([valid[:, :, a:e] for a, e, _, _ in group])
        ys = _project(ys, xs, oks, s, iterations, value_range, keep=((rows.start, rows.stop), (s * k0, s * k1)))
        for i, (_, _, c0, c1) in enumerate(group):
            out[:, :, s * c0 : s * c1] = ys[i * b : (i + 1) * b, rows, s * k0 : s * k1]

    for (_, k0, k1), group in windows.items():
        parts = [group[i:j] for i, j in even_splits(len(group), min(workers, len(group)))]
        helped = [_helpers(workers - 1).submit(correct, part, k0, k1) for part in parts[1:]]
        try:
            correct(parts[0], k0, k1)
        finally:
            wait(helped)  # every part ends before ``out`` is handed on, or a failure raised
        for future in helped:
            future.result()
    return out


@functools.lru_cache(maxsize=8)
def _helpers(n: int) -> ThreadPoolExecutor:
    """``n`` threads, each on one intra-op thread, that correct windows beside the thread of a stream (kept for the
    process: a raster has thousands of blocks)."""
    return ThreadPoolExecutor(n, thread_name_prefix="geosr-correction", initializer=use_intra_op_threads, initargs=(1,))


def project_rows(hr: np.ndarray, lr: np.ndarray, scale: int, valid: np.ndarray | None = None, **kwargs) -> np.ndarray:
    """``project`` of a whole image in the blocks of ``RowStream``: the values ``geosr upscale`` writes for it."""
    stream = RowStream(scale, **kwargs)
    first = stream.push(hr, lr, valid)
    return torch.cat([first, stream.finish()], dim=1).cpu().numpy()
