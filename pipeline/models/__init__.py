"""Models that ship with the pipeline. They know nothing of Hydra.

A `FeatureModel` is linear in its parameters: prediction = features(x) @ theta, one
named scalar parameter per feature. That gives readable column names (`beta0`, `w`)
and lets the pipeline compute the closed-form least-squares fit beside the
gradient-descent one. Any other `nn.Module` works too; it just has no closed form.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import torch
from torch import nn


class FeatureModel(nn.Module):
    """Base: subclasses define `features(x) -> (rows, n_features)` and the names."""

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = tuple(names)
        for name in self.names:
            self.register_parameter(name, nn.Parameter(torch.zeros(())))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def theta(self) -> torch.Tensor:
        return torch.stack([getattr(self, n) for n in self.names])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.features(x) @ self.theta()).unsqueeze(-1)


class Polynomial(FeatureModel):
    """theta_0 + theta_1 x + ... + theta_d x^d of the first x column."""

    def __init__(self, degree: int, names: Optional[Sequence[str]] = None):
        if degree < 0:
            raise ValueError(f"degree must be >= 0; got {degree}")
        names = names or [f"beta{k}" for k in range(degree + 1)]
        if len(names) != degree + 1:
            raise ValueError(f"a degree-{degree} polynomial has {degree + 1} coefficients; got names {list(names)}")
        super().__init__(names)
        self.degree = degree

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, 0]
        return torch.stack([x0**k for k in range(self.degree + 1)], dim=-1)


class Features(FeatureModel):
    """A model linear in its parameters, its features chosen in config.

    The features, in this order: the powers 1..`degree` of each of the `inputs` x
    columns, column by column (degree 1: the columns themselves; 0: none); the hinges
    relu(x - k) of each column at each knot k; the constant 1 when `intercept`. Default
    names: `w` for a single non-constant feature, else `w1`, `w2`, ... in that order, and
    `b` for the intercept, last (`init` lists values in the same order).

        Features()                            # w x + b
        Features(intercept=False)             # w x
        Features(degree=0, knots=[0, 0.5])    # w1 relu(x) + w2 relu(x - 0.5) + b
        Features(inputs=2)                    # w1 x1 + w2 x2 + b
    """

    def __init__(
        self,
        inputs: int = 1,
        degree: int = 1,
        knots: Sequence[float] = (),
        intercept: bool = True,
        names: Optional[Sequence[str]] = None,
    ):
        if inputs < 1 or degree < 0:
            raise ValueError(f"Features needs inputs >= 1 and degree >= 0; got inputs={inputs}, degree={degree}")
        knots = tuple(float(k) for k in knots)
        n_slopes = inputs * (degree + len(knots))
        n_params = n_slopes + bool(intercept)
        if n_params == 0:
            raise ValueError("Features has no feature: set degree >= 1, knots or intercept")
        default = ["w"] if n_slopes == 1 else [f"w{k}" for k in range(1, n_slopes + 1)]
        names = list(names) if names else default + (["b"] if intercept else [])
        if len(names) != n_params:
            raise ValueError(f"Features has {n_params} parameters; got names {names}")
        super().__init__(names)
        self.inputs, self.degree, self.knots, self.intercept = int(inputs), int(degree), knots, bool(intercept)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.inputs:
            raise ValueError(
                f"Features(inputs={self.inputs}) got {x.shape[-1]} x column(s): "
                "set model.inputs to the number of data.x columns"
            )
        columns = x.unbind(-1)
        feats = [col**k for col in columns for k in range(1, self.degree + 1)]
        feats += [torch.relu(col - knot) for col in columns for knot in self.knots]
        if self.intercept:
            feats.append(torch.ones_like(x[..., 0]))
        return torch.stack(feats, dim=-1)


def is_linear_in_parameters(model: nn.Module) -> bool:
    return isinstance(model, FeatureModel)


def scalar_parameter_names(model: nn.Module) -> list[str]:
    """One name per scalar of the flattened parameter vector (the estimate columns)."""
    names = []
    for name, p in model.named_parameters():
        if p.numel() == 1:
            names.append(name)
        else:
            names += [f"{name}[{','.join(map(str, idx))}]" for idx in _indices(p.shape)]
    return names


def _indices(shape: torch.Size) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(n) for n in shape)))


def least_squares(features: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Closed-form OLS coefficients in float64 (the optimum gradient descent approaches)."""
    sol = torch.linalg.lstsq(features.double().cpu(), y.double().cpu().reshape(len(y), -1))
    return sol.solution[:, 0]
