"""The Gram engine's arithmetic on moments: each run's sums of squares and products as one
matrix product of its row counts with per-row products formed once, the matrix of one SGD
epoch on (parameters, momentum, 1) and its powers, and losses, gradients and closed forms
from the moments (see `gram` for how they fit together).

Every computation here treats each run on its own, in an order that does not depend on the
other runs of the batch: the products of counts are taken in blocks of `GEMM_BLOCK` runs
(one shape, so one BLAS kernel, whatever the batch), and everything per run is elementwise
or a LAPACK call per matrix. So a run's numbers do not depend on its company (tested).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.core.resampling import Draws
from pipeline.core.runs import Run
from pipeline.train.engines.stacked_optim import SGDSettings, sgd_update
from pipeline.train.problem import Problem, run_draws

GEMM_BLOCK = 256  # runs per product of counts and row products (padded): one shape for every batch


def loss_scale(loss_fn: nn.Module, n_values: int) -> float:
    """The loss is `loss_scale * sum of squared errors` (MSELoss: mean or sum)."""
    return 1.0 / n_values if loss_fn.reduction == "mean" else 1.0


def loss_scales(problem: Problem, n_rows: Tensor) -> Tensor:
    """(runs,) `loss_scale` of each run, from the rows it trains on (a jackknife run has one fewer)."""
    if problem.parts.loss_fn.reduction == "mean":
        return 1.0 / (n_rows * problem.y.shape[1])
    return torch.ones_like(n_rows)


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


# Products of the tiny per-run matrices and vectors, as sums over the inner index one term at
# a time, in index order: batched BLAS on tiny matrices is slow on a CPU and rounds differently
# with the number of runs, and torch's `sum` over a dimension of 3 or 4 costs more than the
# few elementwise passes. Each run's numbers depend on its own entries alone.


def dot(u: Tensor, v: Tensor) -> Tensor:
    """(runs, k) . (runs or 1, k) -> (runs,)."""
    out = u[:, 0] * v[:, 0]
    for j in range(1, u.shape[1]):
        out = out + u[:, j] * v[:, j]
    return out


def matrix_times(matrices: Tensor, vectors: Tensor) -> Tensor:
    """(runs or 1, a, b) @ (runs, b) -> (runs, a)."""
    out = matrices[:, :, 0] * vectors[:, :1]
    for j in range(1, matrices.shape[2]):
        out = out + matrices[:, :, j] * vectors[:, j : j + 1]
    return out


def matrix_product(a: Tensor, b: Tensor) -> Tensor:
    """(runs or 1, q, k) @ (runs or 1, k, q') -> (runs, q, q')."""
    out = a[:, :, :1] * b[:, :1, :]
    for k in range(1, a.shape[2]):
        out = out + a[:, :, k : k + 1] * b[:, k : k + 1, :]
    return out


@dataclass(frozen=True)
class RowProducts:
    """What every run of a task shares: its original rows, in an orthonormal basis, as products.

    F = U S V^T: the features of the original rows (float64, rank r); a0: the OLS fit of those
    rows, e = y - F a0 its residuals. A run that weighs row i by w_i (its count) has, with
    z = S V^T (theta - a0),
        sum_i w_i (F_i theta - y_i)^2 = z^T G z - 2 z^T g + ee,
        G = sum_i w_i u_i u_i^T,  g = sum_i w_i u_i e_i,  ee = sum_i w_i e_i^2,
    so the per-row products [u_i u_i^T (upper triangle), u_i e_i, e_i^2] are formed once and a
    run's moments are one product with its counts. A run whose scheme rebuilds y (y* = F a0 +
    e*: residual, wild) has w = 1, g = U^T e*, ee = |e*|^2. Expanding around a0 keeps losses
    accurate (no sum of y^2 cancelling against the fit), and the basis keeps the closed form
    accurate (a solve with G, conditioned like the draw, not like F^T F).
    """

    anchor: Tensor  # (p,) a0
    to_basis: Tensor  # (p, r): z = to_basis^T (theta - a0) = S V^T (theta - a0)
    from_basis: Tensor  # (p, r): theta - a0 = from_basis z (V S^-1) within the span of F's rows
    basis: Tensor  # (n, r) U
    residuals: np.ndarray  # (n,) e
    products: Tensor  # (n, r (r + 1) / 2 + r + 1)

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    @classmethod
    def of(cls, problem: Problem, features: Tensor) -> Optional["RowProducts"]:
        """`features`: (n, p) float64 of the original rows (as the training dtype holds x); None
        when they are not finite (x beyond the dtype's range): such rows have no moments."""
        if not bool(torch.isfinite(features).all()):
            return None
        beta, _, resid = problem.original_fit
        u, s, vh = torch.linalg.svd(features, full_matrices=False)
        rank = int((s > s.max() * max(features.shape) * torch.finfo(torch.float64).eps).sum()) if len(s) else 0
        u, s, v = u[:, :rank], s[:rank], vh[:rank].T
        e = torch.as_tensor(resid, dtype=torch.float64, device=features.device)
        j, k = torch.triu_indices(rank, rank, device=features.device)
        products = torch.cat([u[:, j] * u[:, k], u * e[:, None], (e * e)[:, None]], dim=1)
        anchor = torch.as_tensor(beta, dtype=torch.float64, device=features.device)
        return cls(anchor, v * s, v / s, u, resid, products)

    def unpack(self, sums: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(G (runs, r, r), g (runs, r), ee (runs,)) from (runs, products) sums."""
        r = self.rank
        j, k = torch.triu_indices(r, r, device=sums.device)
        g_mat = sums.new_zeros(len(sums), r, r)
        g_mat[:, j, k] = sums[:, : len(j)]
        g_mat[:, k, j] = sums[:, : len(j)]
        return g_mat, sums[:, len(j) : len(j) + r], sums[:, -1]


class BlockedProduct:
    """(k, n) @ (n, m) for k <= GEMM_BLOCK, as one product of a (GEMM_BLOCK, n) block (zeros
    below the k rows): every run goes through the same kernel, whatever the batch. The block's
    memory is reused from product to product."""

    def __init__(self, n: int, device: torch.device):
        self.block = torch.zeros(GEMM_BLOCK, n, dtype=torch.float64, device=device)

    def __call__(self, rows: Tensor, right: Tensor) -> Tensor:
        self.block[: len(rows)] = rows  # cast to float64 on the way (counts are integers)
        self.block[len(rows) :] = 0.0
        return (self.block @ right)[: len(rows)]


def rebuilt_noise(problem: Problem, draws: Draws) -> Tensor:
    """(runs, n) e* = y* - F a0 of draws that rebuild y, with y* as the training dtype holds it
    (`problem.training_data` rounds it once), so the moments are those of what the reference trains on."""
    _, fitted, resid = problem.original_fit
    responses = draws.responses(fitted, fitted, resid)  # every run rebuilt: the first argument goes unread
    y_star = torch.as_tensor(responses, device=problem.device).to(problem.dtype)
    return y_star.double() - torch.as_tensor(fitted[draws.rows], device=problem.device)


@dataclass
class DrawMoments:
    """Each run's moments (`RowProducts`) and the rows it trains on."""

    gram: Tensor  # (runs, r, r) G
    cross: Tensor  # (runs, r) g
    squares: Tensor  # (runs,) ee
    n_rows: Tensor  # (runs,) rows the run trains on (its counts' sum), float64

    @classmethod
    def of(cls, problem: Problem, products: RowProducts, runs: list[Run]) -> "DrawMoments":
        """The moments of `runs` (one resample size), GEMM_BLOCK runs at a time: each block's
        draws (`core.resampling`), their counts, one product with the row products."""
        device = products.products.device
        product = BlockedProduct(problem.n_rows, device)
        out: list[Tensor] = []
        n_rows: list[np.ndarray] = []
        for start in range(0, len(runs), GEMM_BLOCK):
            draws = run_draws(problem, runs[start : start + GEMM_BLOCK])
            counts = draws.counts(problem.n_rows)
            sums = product(torch.from_numpy(counts).to(device), products.products)
            if draws.rebuilt.any():  # their own y: g = U^T e*, ee = |e*|^2 (G from their counts, all ones)
                at = torch.as_tensor(np.flatnonzero(draws.rebuilt), device=device)
                noise = rebuilt_noise(problem, draws.take(np.flatnonzero(draws.rebuilt)))
                r = products.rank
                sums[at, -1 - r : -1] = product(noise, products.basis)
                sums[at, -1] = product(noise * noise, noise.new_ones(noise.shape[1], 1))[:, 0]
            out.append(sums)
            n_rows.append(counts.sum(axis=1))
        g_mat, cross, squares = products.unpack(torch.cat(out))
        return cls(g_mat, cross, squares, torch.as_tensor(np.concatenate(n_rows), dtype=torch.float64, device=device))

    def keep(self, index: Tensor) -> "DrawMoments":
        return DrawMoments(*(getattr(self, f.name)[index] for f in fields(self)))


class MomentLosses:
    """Loss, gradient and closed form of each run from its moments, float64, at any parameters.

    In the parameters, with d = theta - a0: loss = s (d^T A d - 2 d^T b + ee), A = V S G S V^T
    (= F^T W F), b = V S g; A and b are formed once, so a loss costs p^2 products per run."""

    def __init__(self, products: RowProducts, moments: DrawMoments, scale: Tensor):
        self.products, self.moments, self.scale = products, moments, scale  # scale: (runs,)
        t = products.to_basis.unsqueeze(0)
        self.gram = matrix_product(matrix_product(t, moments.gram), t.transpose(1, 2))  # A
        self.cross = matrix_times(t, moments.cross)  # b

    def loss(self, theta: Tensor) -> Tensor:
        """(runs,) the loss at (runs, p) parameters."""
        d = theta - self.products.anchor
        return self.scale * (dot(matrix_times(self.gram, d), d) - 2 * dot(self.cross, d) + self.moments.squares)

    def grad(self, theta: Tensor) -> Tensor:
        """(runs, p) the gradient at (runs, p) parameters: 2 s (A d - b)."""
        d = theta - self.products.anchor
        return 2 * self.scale[:, None] * (matrix_times(self.gram, d) - self.cross)

    def theta_cross(self) -> Tensor:
        """(runs, p) F^T W y = A a0 + b."""
        return matrix_times(self.gram, self.products.anchor.expand(len(self.gram), -1)) + self.cross

    def closed_form(self) -> tuple[Tensor, Tensor, Tensor]:
        """(runs, p) least-squares fits, (runs,) their losses and (runs,) the ranks of the runs'
        weighted designs (below p: the optimum is not unique): G z = g solved by Cholesky in
        the orthonormal basis, one LAPACK call per run; a run whose G is singular (a draw of too
        few distinct rows) takes the minimum-norm solution in the parameters, as least squares
        on its rows would."""
        m = self.moments
        chol, info = torch.linalg.cholesky_ex(m.gram)
        z = torch.cholesky_solve(m.cross.unsqueeze(2), chol)[..., 0]
        theta = self.products.anchor + matrix_times(self.products.from_basis.unsqueeze(0), z)
        # singular to rounding: a pivot below r eps of the largest diagonal entry (lstsq's own cut)
        pivots = torch.diagonal(chol, dim1=1, dim2=2).square()
        cut = torch.diagonal(m.gram, dim1=1, dim2=2).amax(dim=1) * m.gram.shape[1] * torch.finfo(m.gram.dtype).eps
        singular = ((info != 0) | (pivots.amin(dim=1) <= cut)).nonzero().squeeze(1)
        rank = torch.full((len(theta),), self.products.rank, dtype=torch.int64, device=theta.device)
        if len(singular):
            solution = matrix_times(torch.linalg.pinv(self.gram[singular], hermitian=True), self.cross[singular])
            theta[singular] = self.products.anchor + solution
            rank[singular] = torch.linalg.matrix_rank(m.gram[singular], hermitian=True)
        return theta, self.loss(theta), rank

    def keep(self, index: Tensor) -> None:
        self.moments, self.scale = self.moments.keep(index), self.scale[index]
        self.gram, self.cross = self.gram[index], self.cross[index]


class HeldOutLosses:
    """The test loss at any parameters, from the test rows' moments around the same a0."""

    def __init__(self, features: Tensor, y: Tensor, anchor: Tensor, scale: float):
        e = y - features @ anchor
        self.anchor, self.scale = anchor, scale
        self.gram, self.cross, self.squares = features.T @ features, features.T @ e, (e * e).sum()

    def loss(self, theta: Tensor) -> Tensor:
        d = theta - self.anchor
        return self.scale * (
            dot(matrix_times(self.gram.unsqueeze(0), d), d) - 2 * dot(d, self.cross.unsqueeze(0)) + self.squares
        )


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
        self._powers: dict[int, Tensor] = {1: later}

    def power(self, k: int) -> Tensor:
        """M^k by repeated squaring, elementwise (the same bits in any batch)."""
        if k not in self._powers:
            half = self.power(k // 2)
            square = matrix_product(half, half)
            self._powers[k] = square if k % 2 == 0 else matrix_product(square, self.later)
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
    computes them (in the dtype of `features`): for runs near overflow only. `index`: which
    runs of `features`."""

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
