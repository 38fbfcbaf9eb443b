"""torch.optim's SGD and Adam, applied at once to the stacked parameters of many runs.

Every tensor here has the runs along dim 0 and each run has its own learning rate.
The updates follow `torch.optim`'s single-tensor code operation by operation (same
formulas, same order, scalars rounded the same way), so each run's iterates match
what `torch.optim` gives that run alone, up to rounding. The optimiser's settings
(momentum, betas, weight decay, ...) are read from the experiment's own optimiser.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from pipeline.core.settings import AdamSettings, SGDSettings
from pipeline.train.problem import probe_optimizer

Stacked = dict[str, Tensor]  # parameter name -> (runs, *shape)


def per_run(values: Tensor, like: Tensor) -> Tensor:
    """(runs,) values shaped to broadcast against a stacked (runs, ...) tensor."""
    return values.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


Settings = Union[SGDSettings, AdamSettings]


def sgd_update(
    param: Tensor, grad: Tensor, buf: Optional[Tensor], lr: Tensor, s: SGDSettings
) -> tuple[Tensor, Optional[Tensor]]:
    """One SGD step of one stacked tensor; `buf` is None before the first step.

    Pure (returns new tensors), so the Gram engine can apply it to unit vectors and
    read off the matrix of one epoch.
    """
    if s.maximize:
        grad = -grad
    if s.weight_decay != 0:
        grad = grad + s.weight_decay * param
    if s.momentum != 0:
        buf = grad.clone() if buf is None else buf * s.momentum + (1 - s.dampening) * grad
        grad = grad + s.momentum * buf if s.nesterov else buf
    return param - per_run(lr, param) * grad, buf


class StackedSGD:
    """`torch.optim.SGD` for stacked parameters, one learning rate per run."""

    def __init__(self, lr: Tensor, settings: SGDSettings):
        self.lr, self.settings = lr.double(), settings
        self.bufs: dict[str, Optional[Tensor]] = {}

    def step(self, params: Stacked, grads: Stacked) -> Stacked:
        new = {}
        for name, p in params.items():
            new[name], self.bufs[name] = sgd_update(p, grads[name], self.bufs.get(name), self.lr, self.settings)
        return new

    def keep(self, index: Tensor) -> None:
        """Go on with the runs at `index` only (the others have stopped)."""
        self.lr = self.lr[index.to(self.lr.device)]
        self.bufs = {k: None if b is None else b[index] for k, b in self.bufs.items()}


class StackedAdam:
    """`torch.optim.Adam` (and AdamW) for stacked parameters, one learning rate per run.

    All runs of a batch step together, so the step count and its bias corrections are
    plain Python floats, as in `torch.optim.Adam`.
    """

    def __init__(self, lr: Tensor, settings: AdamSettings):
        self.lr, self.settings, self.steps = lr.double(), settings, 0
        self.exp_avg: Stacked = {}
        self.exp_avg_sq: Stacked = {}
        self.max_exp_avg_sq: Stacked = {}

    def step(self, params: Stacked, grads: Stacked) -> Stacked:
        s = self.settings
        beta1, beta2 = s.betas
        self.steps += 1
        bias_correction1 = 1 - beta1**self.steps
        bias_correction2_sqrt = (1 - beta2**self.steps) ** 0.5
        step_size = self.lr / bias_correction1  # float64, rounded to the param dtype once, as torch does
        new = {}
        for name, p in params.items():
            grad = -grads[name] if s.maximize else grads[name]
            if s.weight_decay != 0:
                if s.decoupled_weight_decay:
                    p = p * per_run(1 - self.lr * s.weight_decay, p)
                else:
                    grad = grad + s.weight_decay * p
            m = self.exp_avg.get(name, torch.zeros_like(p))
            v = self.exp_avg_sq.get(name, torch.zeros_like(p))
            m = m.lerp(grad, 1 - beta1)
            v = v * beta2 + (1 - beta2) * grad * grad
            self.exp_avg[name], self.exp_avg_sq[name] = m, v
            if s.amsgrad:
                v = torch.maximum(self.max_exp_avg_sq.get(name, torch.zeros_like(p)), v)
                self.max_exp_avg_sq[name] = v
            denom = v.sqrt() / bias_correction2_sqrt + s.eps
            new[name] = p - per_run(step_size, p) * m / denom
        return new

    def keep(self, index: Tensor) -> None:
        """Go on with the runs at `index` only (the others have stopped)."""
        self.lr = self.lr[index.to(self.lr.device)]
        for state in (self.exp_avg, self.exp_avg_sq, self.max_exp_avg_sq):
            for name in state:
                state[name] = state[name][index]


StackedOptimizer = Union[StackedSGD, StackedAdam]


def optimizer_name(make_optim: Callable[..., torch.optim.Optimizer]) -> str:
    return probe_optimizer(make_optim)[0].__name__


def optimizer_settings(make_optim: Callable[..., torch.optim.Optimizer]) -> Optional[Settings]:
    """The experiment optimiser's settings, or None if it is not one the stacked engines know."""
    cls, d = probe_optimizer(make_optim)
    if cls is torch.optim.SGD:
        return SGDSettings(
            float(d["momentum"]),
            float(d["dampening"]),
            float(d["weight_decay"]),
            bool(d["nesterov"]),
            bool(d.get("maximize", False)),
        )
    if cls in (torch.optim.Adam, torch.optim.AdamW):
        decoupled = bool(d.get("decoupled_weight_decay", cls is torch.optim.AdamW))
        return AdamSettings(
            tuple(float(b) for b in d["betas"]),
            float(d["eps"]),  # type: ignore[arg-type]
            float(d["weight_decay"]),
            bool(d["amsgrad"]),
            bool(d.get("maximize", False)),
            decoupled,
        )
    return None


def stacked_optimizer(settings: Settings, lr: Tensor) -> StackedOptimizer:
    return StackedSGD(lr, settings) if isinstance(settings, SGDSettings) else StackedAdam(lr, settings)
