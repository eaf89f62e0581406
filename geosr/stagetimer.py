"""Where the time goes: opt-in timers of the pipeline's stages, recorded from every thread that runs one.

``with timing(StageTimer()) as t:`` around a run makes geosr.strips' loop and geosr.pipeline's threads record the
seconds of each stage into ``t`` (benchmarks/pipeline_only.py --stages prints them); outside such a block
``stage(name)`` is one shared do-nothing context, so the timers cost nothing when nobody asks.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator


class StageTimer:
    """Seconds and calls per (thread name, stage) of a run: an opt-in measurement, never on by default.

    ``seconds`` are wall-clock seconds, ``cpu`` the thread's own CPU seconds in them (less where the thread waited or
    another took the core; work that a library hands to threads of its own, such as GDAL's compression, is not in
    it). A stage's seconds exclude those of the stages nested in it (on the same thread), so the stages of one thread
    add up to at most its wall time. sync: called as each stage ends (``torch.cuda.synchronize`` when the model runs
    on a GPU, so that queued kernels count for the stage that queued them; None on the CPU).
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.cpu: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()
        self._open = threading.local()  # per thread: [wall, cpu] seconds of the stages nested in each open stage

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        stack = self._open.__dict__.setdefault("stack", [])
        stack.append([0.0, 0.0])
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
            nested = stack.pop()
            if stack:
                stack[-1][0] += dt
                stack[-1][1] += dc
            key = (threading.current_thread().name, name)
            with self._lock:
                self.seconds[key] += dt - nested[0]
                self.cpu[key] += dc - nested[1]
                self.calls[key] += 1


_timer: StageTimer | None = None  # set by ``timing`` only
_OFF = contextlib.nullcontext()


def stage(name: str) -> contextlib.AbstractContextManager:
    """A context that adds its seconds to stage ``name`` of the StageTimer ``timing`` set, if any (else a no-op)."""
    return _OFF if _timer is None else _timer.stage(name)


def timed(name: str, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)``, its seconds added to stage ``name`` (see ``stage``)."""
    with stage(name):
        return fn(*args, **kwargs)


@contextlib.contextmanager
def timing(timer: StageTimer) -> Iterator[StageTimer]:
    """Record the stages of the runs inside this block (from every thread) into ``timer``."""
    global _timer
    previous, _timer = _timer, timer
    try:
        yield timer
    finally:
        _timer = previous
