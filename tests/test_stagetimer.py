"""geosr.stagetimer: opt-in stage timers, per thread, nested stages counted once."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from geosr import stagetimer
from geosr.stagetimer import StageTimer, stage, timed, timing


def test_off_every_stage_is_one_shared_do_nothing_context():
    assert stage("model") is stage("blend")
    assert timed("x", lambda a, b=0: a + b, 1, b=2) == 3


def test_a_stage_leaves_out_the_stages_nested_in_it(monkeypatch):
    """On a clock that the test moves: 2 s in the outer stage alone and 5 s in the inner one."""
    now = [0.0]
    monkeypatch.setattr(stagetimer, "time", SimpleNamespace(perf_counter=lambda: now[0], thread_time=lambda: now[0]))
    timer = StageTimer()
    with timing(timer), stage("outer"):
        now[0] += 2
        with stage("inner"):
            now[0] += 5
    assert timer.seconds == {("MainThread", "outer"): 2, ("MainThread", "inner"): 5} == timer.cpu
    assert timer.calls == {("MainThread", "outer"): 1, ("MainThread", "inner"): 1}


def test_stages_are_recorded_by_thread_name_and_timing_restores_what_was_on_before():
    first, second = StageTimer(), StageTimer()
    with timing(first):
        with timing(second):
            worker = threading.Thread(target=timed, args=("read", time.sleep, 0.01), name="geosr-reader")
            worker.start()
            worker.join()
        with stage("after"):
            pass
    assert set(second.calls) == {("geosr-reader", "read")} and set(first.calls) == {("MainThread", "after")}
    assert stage("model") is stage("blend")  # off again
