"""The divergence guard: stop a run whose losses became NaN/Inf, or whose generator exploded while they stay finite.

Every step, ``DivergenceGuard.check`` takes the step's losses (means over the processes, so every process decides
alike) and raises ``TrainingDiverged`` when

- any logged value is NaN or infinite, or
- the MSE has stayed above ``factor`` (``--divergence-factor``, 20) times its median over the last GUARD_HISTORY
  normal steps for GUARD_PATIENCE steps in a row (a generator that exploded or collapsed, seen on the CPU with
  ``global_skip`` in bf16), once GUARD_WARMUP normal steps are known.

A step over the threshold is a spike: it is not added to the history, and the loop writes no checkpoint during one,
so the last state on disk is from before it. The message names that state (or says there is none) and the remedies.
The history and the spike count are part of the training state, so a resumed run judges as the uninterrupted one.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from pathlib import Path
from typing import Any

from geosr.errors import GeosrError

GUARD_HISTORY, GUARD_WARMUP, GUARD_PATIENCE = 200, 50, 10
REMEDIES = "a lower --lr-g/--lr-d, --grad-clip or --precision fp32"


class TrainingDiverged(GeosrError):
    """A loss became NaN or infinite, or the MSE exploded; the run stopped without saving over its last good
    checkpoint."""


class DivergenceGuard:
    """Watches one run's losses for divergence; ``factor`` 0 switches the MSE watch off (NaN/Inf always stop)."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.recent: deque[float] = deque(maxlen=GUARD_HISTORY)
        self.spikes = 0

    @property
    def median(self) -> float:
        return statistics.median(self.recent) if self.recent else math.nan

    @property
    def spiking(self) -> bool:
        """Whether the last step was a spike (no checkpoint should hold it)."""
        return self.spikes > 0

    @property
    def diverged(self) -> bool:
        return self.spikes >= GUARD_PATIENCE

    def update(self, mse: float) -> bool:
        """Record one step's MSE; True if it is a spike."""
        if self.factor > 0 and len(self.recent) >= GUARD_WARMUP and mse > self.factor * self.median:
            self.spikes += 1
            return True
        self.spikes = 0
        self.recent.append(mse)
        return False

    def check(self, step: int, losses: dict[str, float], saved: tuple[Path, int] | None) -> bool:
        """Judge the step ``step`` by its ``losses`` (which hold 'mse'); True if it is a spike.

        saved: (path, step) of the last state written, for the message. Raises TrainingDiverged as the module
        docstring says.
        """
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        spiking = not bad and self.update(losses["mse"])
        if not bad and not self.diverged:
            return spiking
        if bad:
            what = f"loss {', '.join(f'{k} = {v}' for k, v in bad.items())}"
        else:
            what = (
                f"the MSE ({losses['mse']:.3g}) has stayed above {self.factor:g} x its recent median "
                f"({self.median:.3g}) for {GUARD_PATIENCE} steps: the generator diverged"
            )
        if saved is not None:
            where = f"the last good checkpoint is {saved[0]} (step {saved[1]}); resume it with {REMEDIES}"
        else:
            where = f"no checkpoint was saved yet; start again with {REMEDIES}"
        raise TrainingDiverged(f"step {step}: {what}; training stopped without saving; {where}")

    def state_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "spikes": self.spikes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent.extend(state["recent"])
        self.spikes = int(state["spikes"])
