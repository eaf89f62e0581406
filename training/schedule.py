"""The learning-rate schedule of a training run: a pure function of the step, applied to an optimiser.

Two shapes, both with an optional linear warm-up over the first ``warmup_steps`` steps (from 1/warmup of the rate):

    step     lr * gamma ** (number of milestones <= step)            (the paper's x0.1 after 50 epochs)
    cosine   lr * (f + (1 - f) * (1 + cos(pi * s / S)) / 2)           s = step - warmup, S = total - warmup - 1,
                                                                     f = min_factor: lr * f at the last step

Since the rate depends on the step alone, a checkpoint needs no scheduler state: a resumed run (which may change the
rate, the milestones, the shape or the length) sets the optimiser's rate from its own settings at the saved step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class LrSchedule:
    """The factor on the base learning rate at each step."""

    kind: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    total_steps: int = 1
    warmup_steps: int = 0
    min_factor: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {self.kind!r}; choose one of {', '.join(SCHEDULES)}")

    def factor(self, step: int) -> float:
        """The factor that applies to the optimiser step taken after ``step`` steps."""
        if self.kind == "step":
            decayed = self.gamma ** sum(1 for m in self.milestones if m <= step)
        else:
            span = max(1, self.total_steps - self.warmup_steps - 1)  # the last optimiser step: after total - 1
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            decayed = self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.warmup_steps and step < self.warmup_steps:
            decayed *= (step + 1) / self.warmup_steps
        return decayed


@dataclass
class ScheduledOptimiser:
    """An optimiser whose rate follows ``schedule`` times ``base_lr``; ``apply(step)`` before each optimiser step."""

    opt: torch.optim.Optimizer
    base_lr: float
    schedule: LrSchedule

    def apply(self, step: int) -> float:
        lr = self.base_lr * self.schedule.factor(step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr
