"""An exponential moving average (EMA) of the generator's weights, used for validation and the exported model.

After each generator step: ema = d * ema + (1 - d) * weights, with d = min(decay, (1 + n) / (10 + n)) after n
updates. The warm-up keeps a short run's average from being dominated by the random initial weights (with a plain
0.999, 37 % of the average after 1000 steps would still be the initialisation). Buffers are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """The averaged copy (``.model``, eval mode, no gradients) of a module."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
