"""Test models given by `_target_`: one that passes validation (a forward pass on 2 rows) and
raises in the task, a stand-in for a user's model with a bug that only real data trigger; and
one whose training waits for the test (`HeldLine`)."""

import time
from pathlib import Path

import torch
from torch import nn


class RaisesOnFullData(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            raise RuntimeError("boom: a bug that only the full data trigger")
        return x[:, :1] * self.w


class HeldLine(nn.Module):
    """b + w x, whose training waits while the file `hold` exists, from its process's
    (`after` + 1)-th run on: a test lets a task save `after` runs, then does something to it
    (kills it, requeues it, lets it time out) while it waits, and deletes `hold` to let it
    finish. The test waits on these events, never on how fast the machine trains."""

    runs_started = 0  # in this process: a requeued task starts counting again

    def __init__(self, hold: str, after: int = 2) -> None:
        super().__init__()
        self.hold, self.after, self.held = Path(hold), after, None
        self.b = nn.Parameter(torch.zeros(()))
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the first training step of a run: checks use 2 rows, the launch's linearity probe no gradient
        if self.held is None and x.shape[0] > 2 and torch.is_grad_enabled():
            HeldLine.runs_started += 1
            self.held = HeldLine.runs_started > self.after
        while self.held and self.hold.exists():
            time.sleep(0.05)
        return (self.b + self.w * x[:, 0])[:, None]
