"""The Gram engine's arithmetic on moments: per-run sums in a batch-independent order, the
matrix of one SGD epoch on (parameters, momentum, 1), its powers, and losses from the rows
or from the moments (see `gram` for how they fit together)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from pipeline.train.engines.stacked_optim import SGDSettings, sgd_update


def loss_scale(loss_fn: nn.Module, n_values: int) -> float:
    """The loss is `loss_scale * sum of squared errors` (MSELoss: mean or sum)."""
    return 1.0 / n_values if loss_fn.reduction == "mean" else 1.0


def state_size(n_params: int, settings: SGDSettings) -> int:
    return (2 * n_params if settings.momentum != 0 else n_params) + 1


_BLOCK = 2048  # rows per partial sum in `row_sum`


def row_sum(values: Tensor) -> Tensor:
    """(runs, rows) -> (runs,), summed in an order that does not depend on the number of runs.

    torch splits the sum of one long row across threads (an order of its own) but sums
    many rows one per thread; summing blocks of `_BLOCK` rows first gives every run the
    same order whichever runs share its batch, so chunking never changes a result.
    """
    full = values.shape[1] - values.shape[1] % _BLOCK
    out = values[:, full:].sum(dim=1)
    if full:
        out = values[:, :full].unflatten(1, (full // _BLOCK, _BLOCK)).sum(dim=2).sum(dim=1) + out
    return out


def predictions(theta: Tensor, features: Tensor) -> Tensor:
    """(runs, rows) = sum_j theta_j F_j, one feature at a time (BLAS would sum in an order
    that depends on the number of runs). `features`: (runs or 1, rows, p)."""
    out = theta[:, :1] * features[:, :, 0]
    for j in range(1, features.shape[2]):
        out = out + theta[:, j : j + 1] * features[:, :, j]
    return out


def matrix_times(matrices: Tensor, vectors: Tensor) -> Tensor:
    """(runs, a, b) @ (runs, b) -> (runs, a), elementwise: batched BLAS on tiny matrices is
    slow on a CPU, and rounds differently with the number of runs."""
    return (matrices * vectors.unsqueeze(1)).sum(dim=-1)


def gram_moments(features: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """G = F^T F (runs, p, p) and c = F^T y (runs, p) of each run's (runs, rows, p) features, (runs, rows) y."""
    p = features.shape[2]
    g = torch.empty(features.shape[0], p, p, dtype=features.dtype, device=features.device)
    for j in range(p):
        for k in range(j, p):
            g[:, j, k] = g[:, k, j] = row_sum(features[:, :, j] * features[:, :, k])
    c = torch.stack([row_sum(features[:, :, j] * y) for j in range(p)], dim=1)
    return g, c


def epoch_matrix(h_mat: Tensor, h_vec: Tensor, lr: Tensor, settings: SGDSettings, first: bool) -> Tensor:
    """(runs, q, q) matrix of one SGD epoch on z = (theta, buffer, 1), gradient H theta - h.

    Column j is the update applied to unit vector e_j (the last coordinate carries
    the constant 1), so M is exactly the map `sgd_update` computes. `first`: the first
    epoch, where the momentum buffer starts as the gradient.
    """
    runs, p = h_vec.shape
    q = state_size(p, settings)
    basis = torch.eye(q, dtype=h_vec.dtype, device=h_vec.device).expand(runs, q, q)
    theta, one = basis[..., :p], basis[..., q - 1 :]
    grad = (theta.unsqueeze(2) * h_mat.unsqueeze(1)).sum(dim=-1) - one * h_vec.unsqueeze(1)  # H e_j - h 1
    buf = None if first or settings.momentum == 0 else basis[..., p : 2 * p]
    new_theta, new_buf = sgd_update(theta, grad, buf, lr, settings)
    images = [new_theta] + ([new_buf] if settings.momentum != 0 else []) + [one]
    return torch.cat(images, dim=-1).transpose(1, 2)


class EpochMaps:
    """Advances the state of the live runs from one epoch to a later one."""

    def __init__(self, first: Tensor, later: Tensor):
        self.first, self.later = first, later
        self._powers: dict[int, Tensor] = {}

    def power(self, k: int) -> Tensor:
        if k not in self._powers:
            self._powers[k] = torch.linalg.matrix_power(self.later, k)
        return self._powers[k]

    def advance(self, z: Tensor, start: int, end: int) -> Tensor:
        k = end - start
        if k > 0 and start == 0:
            z, k = matrix_times(self.first, z), k - 1
        return matrix_times(self.power(k), z) if k > 0 else z

    def keep(self, index: Tensor) -> None:
        self.first, self.later = self.first[index], self.later[index]
        self._powers = {k: v[index] for k, v in self._powers.items()}


class RowLosses:
    """Loss and gradient at given parameters from each run's rows, as the reference loop
    computes them (in the dtype of `features`). `index`: which runs of the chunk."""

    def __init__(self, features: Tensor, y: Tensor, scale: float):
        self.features, self.y, self.scale = features, y, scale  # (runs or 1, rows, p), (runs or 1, rows)

    def _data(self, index: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return (self.features, self.y) if index is None else (self.features[index], self.y[index])

    def loss(self, theta: Tensor, index: Optional[Tensor] = None) -> Tensor:
        features, y = self._data(index)
        return row_sum((predictions(theta, features) - y).square()) * self.scale

    def grad(self, theta: Tensor, index: Optional[Tensor] = None) -> Tensor:
        features, y = self._data(index)
        residuals = predictions(theta, features) - y
        return torch.stack([row_sum(residuals * features[:, :, j]) for j in range(features.shape[2])], dim=1) * (
            2 * self.scale
        )


class MomentLosses:
    """Each live run's loss from its moments, in float64, expanded around a least-squares
    solution (`torch.linalg.pinv`, which unlike `lstsq` gives the same bits in any batch)."""

    def __init__(self, g_mat: Tensor, c_vec: Tensor, anchor_loss: Callable[[Tensor], Tensor], scale: float):
        self.g_mat, self.scale = g_mat, scale
        self.anchor = matrix_times(torch.linalg.pinv(g_mat, hermitian=True), c_vec)
        self.anchor_loss = anchor_loss(self.anchor)
        self.normal_residual = matrix_times(g_mat, self.anchor) - c_vec  # ~0

    def loss(self, theta: Tensor) -> Tensor:
        d = theta - self.anchor
        quadratic = (matrix_times(self.g_mat, d) * d).sum(dim=1)
        return self.anchor_loss + self.scale * (quadratic + 2 * (d * self.normal_residual).sum(dim=1))

    def keep(self, index: Tensor) -> None:
        self.g_mat, self.anchor, self.anchor_loss = self.g_mat[index], self.anchor[index], self.anchor_loss[index]
        self.normal_residual = self.normal_residual[index]
