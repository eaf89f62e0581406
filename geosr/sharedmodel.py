"""One predictor shared by the threads of the files in flight (``geosr.batch``): tiles that wait while the model is
busy run together in its next call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from geosr.predictor import Predictor


class Cancelled(BaseException):
    """A model call given up because the batch stopped (a BaseException: no file records it as its failure)."""


class SharedModel:
    """One predictor shared by the threads of the files in flight: the tiles that wait while the model is busy run
    together in its next call, up to ``limit`` tiles of one shape (the oldest request first; a request is never
    split). Everything else (card, scale, device, ...) is the predictor's."""

    def __init__(self, predictor: Predictor, limit: int) -> None:
        self._predictor = predictor
        self._limit = limit
        self._cond = threading.Condition()
        self._waiting: list[_Request] = []
        self._busy = False
        self._cancelled = False

    def __getattr__(self, name: str):
        return getattr(self._predictor, name)

    def cancel(self) -> None:
        """Fail every call not yet running, and every later one, with Cancelled."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def run(self, tiles):
        """As ``Predictor.run``; may run other threads' tiles in the same call."""
        request = _Request(tiles)
        with self._cond:
            self._waiting.append(request)
            while not request.done:
                if self._cancelled and request in self._waiting:
                    self._waiting.remove(request)
                    raise Cancelled()
                if self._busy:
                    self._cond.wait()
                    continue
                batch = self._take()
                self._busy = True
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if request.error is not None:
            raise request.error
        return request.out

    def _take(self) -> list[_Request]:
        """The oldest waiting request and the later ones of its shape that fit under the limit."""
        first = self._waiting[0]
        key = _key(first.tiles)
        batch, count = [], 0
        for r in list(self._waiting):
            if _key(r.tiles) == key and (not batch or count + len(r.tiles) <= self._limit):
                batch.append(r)
                count += len(r.tiles)
                self._waiting.remove(r)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        import torch

        try:
            x = batch[0].tiles if len(batch) == 1 else torch.cat([r.tiles for r in batch])
            y = self._predictor.run(x)
        except BaseException as exc:  # every thread of the call hears of it, none waits for ever
            for r in batch:
                r.error, r.done = exc, True
            return
        start = 0
        for r in batch:
            r.out, r.done = y[start : start + len(r.tiles)], True
            start += len(r.tiles)


@dataclass(eq=False)
class _Request:
    """One thread's tiles waiting for the model; compared by identity (two requests may hold equal tiles, and tiles
    of different shapes cannot be compared at all)."""

    tiles: Any
    out: Any = None
    error: BaseException | None = None
    done: bool = False


def _key(tiles) -> tuple:
    return tuple(tiles.shape[1:]), tiles.dtype, tiles.device
