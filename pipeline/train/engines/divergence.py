"""A run's fate, decided the same way by every engine: the reference loop's rules.

Divergence is checked at logged epochs only (a GPU sync each): a run whose loss or
parameters are not finite there stops with the parameters it had. At the end a run is
`diverged` if it stopped or its final loss or parameters are not finite, else
`not_converged` while its final gradient norm exceeds `train.grad_tol`, else `ok`.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from pipeline.core.runs import DIVERGED, NOT_CONVERGED, OK


def finite_runs(loss: Tensor, params: Tensor) -> Tensor:
    """(runs,) True where the loss and every parameter are finite: alive at a logged epoch."""
    return torch.isfinite(loss) & torch.isfinite(params).all(dim=-1)


def run_status(stopped: bool, final_loss: float, params: Sequence[float], grad_norm: float, grad_tol: float) -> str:
    if stopped or not (math.isfinite(final_loss) and all(map(math.isfinite, params))):
        return DIVERGED
    return NOT_CONVERGED if not grad_norm <= grad_tol else OK


def closed_curve(
    curve_epoch: list[int], curve_loss: list[float], end: int, final_loss: float, status: str
) -> tuple[list[int], list[float]]:
    """The logged curve, ending at the final epoch's loss unless the run diverged."""
    if status != DIVERGED and (not curve_epoch or curve_epoch[-1] != end):
        return [*curve_epoch, end], [*curve_loss, final_loss]
    return curve_epoch, curve_loss


class LiveRuns:
    """Which runs of a batch are still training, where each one stopped, and its final parameters."""

    def __init__(self, params: Tensor):
        self.index = torch.arange(params.shape[0], device=params.device)
        self.stopped_at: list[Optional[int]] = [None] * params.shape[0]
        self.final = params.clone()

    def check(self, epoch: int, loss: Tensor, params: Tensor) -> Optional[Tensor]:
        """Stop the live runs that are not finite at this logged epoch, keeping their parameters.

        Returns the positions (among the live runs) that go on, or None when all do.
        """
        ok = finite_runs(loss, params)
        if bool(ok.all()):
            return None
        self.final[self.index[~ok]] = params[~ok]
        for i in self.index[~ok].tolist():
            self.stopped_at[i] = epoch
        keep = ok.nonzero().squeeze(1)
        self.index = self.index[keep]
        return keep

    def finish(self, params: Tensor) -> None:
        """The runs still live at the end hold these parameters."""
        self.final[self.index] = params

    def __len__(self) -> int:
        return len(self.index)
