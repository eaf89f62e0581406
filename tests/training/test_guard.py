"""The divergence guard: what counts as a spike, when a run counts as diverged, and what the message says."""

from __future__ import annotations

from pathlib import Path

import pytest

from geosr.training import guard as guardmod
from geosr.training.guard import DivergenceGuard, TrainingDiverged


def warmed_up(factor: float = 20.0) -> DivergenceGuard:
    guard = DivergenceGuard(factor)
    for i in range(guardmod.GUARD_WARMUP):
        assert not guard.update(0.02 + 0.01 * (i % 3))  # ordinary noise
    return guard


def test_the_divergence_guard_spots_a_sustained_explosion():
    guard = warmed_up()
    assert not guard.update(0.3)  # 10x the median: noisy, not a spike
    for _ in range(guardmod.GUARD_PATIENCE - 1):
        assert guard.update(5.0) and not guard.diverged and guard.spiking
    assert guard.update(5.0) and guard.diverged
    assert not DivergenceGuard(0).update(1e30)  # off


def test_one_normal_step_ends_a_spike_and_spikes_stay_out_of_the_history():
    guard = warmed_up()
    median = guard.median
    for _ in range(guardmod.GUARD_PATIENCE - 1):
        guard.update(5.0)
    assert guard.median == median  # the spike did not raise the bar
    assert not guard.update(0.03) and not guard.spiking and guard.spikes == 0


def test_check_names_the_bad_values_and_the_last_good_checkpoint():
    guard = warmed_up()
    assert guard.check(7, {"mse": 0.02, "d_total": 1.3}, None) is False
    with pytest.raises(TrainingDiverged) as err:
        guard.check(
            8,
            {"mse": 0.02, "d_total": float("inf"), "d_logit_real": float("nan")},
            (Path("run/checkpoints/state.pt"), 6),
        )
    assert str(err.value) == (
        "step 8: loss d_total = inf, d_logit_real = nan; training stopped without saving; the last good checkpoint "
        "is run/checkpoints/state.pt (step 6); resume it with a lower --lr-g/--lr-d, --grad-clip or --precision fp32"
    )
    with pytest.raises(TrainingDiverged, match="step 1: loss mse = nan; .* no checkpoint was saved yet; start again"):
        DivergenceGuard(20).check(1, {"mse": float("nan")}, None)


def test_check_stops_after_patience_spikes_in_a_row():
    guard = warmed_up()
    for step in range(1, guardmod.GUARD_PATIENCE):
        assert guard.check(step, {"mse": 5.0}, None) is True
    with pytest.raises(
        TrainingDiverged,
        match=r"the MSE \(5\) has stayed above 20 x its recent median .* for 10 "
        r"steps: the generator diverged",
    ):
        guard.check(guardmod.GUARD_PATIENCE, {"mse": 5.0}, None)


def test_the_guard_state_round_trips():
    guard = warmed_up()
    guard.update(5.0)
    again = DivergenceGuard(20.0)
    again.load_state_dict(guard.state_dict())
    assert list(again.recent) == list(guard.recent) and again.spikes == 1
