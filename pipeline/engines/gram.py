"""The Gram engine: full-batch SGD on a model linear in its parameters, fitted by MSE,
at a cost per epoch that does not depend on the number of rows.

For prediction F theta (F: the features of a run's rows, as `problem.resample_data` gives
them: drawn rows, or every row with drawn residuals) the MSE gradient
is s (G theta - c), with G = F^T F, c = F^T y and s = 2/n (2 for a summed loss). So
one epoch of SGD, momentum and weight decay included, is an affine map of the state
z = (theta, momentum buffer, 1): z <- M z. Its matrix M is read off by applying the
very update `torch.optim.SGD` makes (`stacked_optim.sgd_update`) to the unit vectors.
Between two logged epochs the engine applies M^k at once (`torch.linalg.matrix_power`),
so a run of 10,000 epochs logged every 100 takes 100 small products. The logged
losses come from the moments too, expanded around a solution a of the normal equations
(pinv(G) c): L(theta) = L(a) + s/2 (d^T G d + 2 d^T (G a - c)), d = theta - a, a sum
that does not cancel, L(a) taken once from the rows. Only the final loss and gradient, and
losses near overflow, are computed from the rows, in the training dtype, as the
reference loop computes them.

Numbers: G, c, M and the state are float64 whatever `train.dtype` is (they cost p^2
per run, nothing); parameters are rounded to `train.dtype` wherever the reference
loop would look at them (divergence checks, losses, results), so a float32 run
overflows, diverges and reports like the float32 reference loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from pipeline.engines.fate import LiveRuns
from pipeline.engines.stacked import (ChunkOutcome, LossLog, chunk_data, closed_forms, features_of, initial_models,
                                      results_from)
from pipeline.engines.stacked_optim import SGDSettings, optimizer_name, optimizer_settings, sgd_update
from pipeline.problem import Problem
from pipeline.records import Run, RunResult, TrainSettings

ENGINE = "gram"


def loss_scale(loss_fn: nn.Module, n_values: int) -> float:
    """The loss is `loss_scale * sum of squared errors` (MSELoss: mean or sum)."""
    return 1.0 / n_values if loss_fn.reduction == "mean" else 1.0


def state_size(n_params: int, settings: SGDSettings) -> int:
    return (2 * n_params if settings.momentum != 0 else n_params) + 1


def bytes_per_run(problem: Problem) -> int:
    """Memory one run needs: its data and their features (float64 and the training dtype), M and its powers."""
    n, width = problem.x.shape[0], problem.x.shape[1] + problem.y.shape[1]
    p = len(problem.parts.param_names)
    q = 2 * p + 1
    itemsize = torch.finfo(problem.dtype).bits // 8
    return 8 * (n * (p + width + 1) + 8 * q * q) + itemsize * n * (width + p + 2)


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
        out = out + theta[:, j:j + 1] * features[:, :, j]
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
    theta, one = basis[..., :p], basis[..., q - 1:]
    grad = (theta.unsqueeze(2) * h_mat.unsqueeze(1)).sum(dim=-1) - one * h_vec.unsqueeze(1)  # H e_j - h 1
    buf = None if first or settings.momentum == 0 else basis[..., p:2 * p]
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
        return torch.stack([row_sum(residuals * features[:, :, j]) for j in range(features.shape[2])],
                           dim=1) * (2 * self.scale)


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


def _held_out(problem: Problem, model: nn.Module, theta: Tensor) -> Optional[Tensor]:
    if problem.x_test is None:
        return None
    rows = problem.x_test.shape[0] * problem.y_test.shape[1]
    test = RowLosses(model.features(problem.x_test).unsqueeze(0), problem.y_test.T,
                     loss_scale(problem.parts.loss_fn, rows))
    return test.loss(theta)


# A run that overflows in the training dtype between two logged epochs. The float64 state
# would carry it further than the training dtype can, so its last epochs are stepped again
# in the training dtype, as the reference loop steps them, and overflow (inf, then NaN) as
# they do there. Only the last ones: binary lifting over M, M^2, M^4, ... finds the last
# epoch at which the float64 state is still trusted (`StepBound`), in O(log k) small
# products, and the stepping starts there, from that state rounded to the training dtype.
#
# Why there and no earlier: while no number of a step comes near the dtype's largest
# value, the training dtype only rounds, and the reference loop's state is the float64
# one up to its own rounding (relative 2^-24 per step in float32); rounding the float64
# state adds one such error, which the linear map grows no faster than the state itself.
# What matters is headroom in size, not a count of epochs. Measured on 2,484 diverging
# runs logged 12 to 400 epochs apart, so that many are logged within an epoch or two of
# their overflow (every gram family of tests/test_batched.py, float32 and float64): 21
# differ from the reference loop there (noise in its small parameters overflowing with
# either sign, its final gradient), the same 21 when stepping starts 16 epochs earlier or
# 2 later, 25 when 4 later and 86 when 8 later (from untrusted states, in fast runs).
#
# The headroom: a bound on every number of the next step must stay 2^10 below the dtype's
# largest value. The lifting checks O(log k) epochs only, so it relies on that bound
# growing monotonically once a run diverges: for plain SGD the epoch's matrix is
# symmetric, so ||theta - fixed point||_2 is log-convex in the epoch; with momentum the
# growing modes are real and outgrow the decaying ones, whose transients the 2^10 absorbs.
# Stepped epochs: log(2^10 * bound / |state|) / log(growth per epoch) until the overflow,
# then 1-2 until the parameters are all NaN (measured), where the stepping stops.
_HEADROOM = 2.0 ** 10


def _squared(matrices: Tensor) -> Tensor:
    """(runs, q, q) -> their squares, elementwise like `matrix_times` (the same bits in any batch)."""
    return (matrices.unsqueeze(2) * matrices.transpose(1, 2).unsqueeze(1)).sum(dim=-1)


def doubling_powers(matrices: Tensor, levels: int) -> list[Tensor]:
    """[M, M^2, M^4, ..., M^(2^(levels - 1))] by repeated squaring (entries may overflow to inf)."""
    powers = [matrices]
    while len(powers) < levels:
        powers.append(_squared(powers[-1]))
    return powers[:levels]


def _norms(rows: Tensor) -> Tensor:
    """2-norms of the rows, computed without overflow (`Tensor.norm` squares: 1e200 gives inf)."""
    if rows.shape[1] == 0:
        return rows.new_zeros(rows.shape[0])
    size = rows.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(rows.dtype).tiny)
    return (rows / size).norm(dim=1) * size[:, 0]  # NaN for a row with inf or NaN


@dataclass(frozen=True)
class StepBound:
    """A bound, per run, on the size of every number one SGD step in the training dtype
    computes from a state: predictions, residuals, the gradient's partial sums over rows,
    weight decay and momentum terms, the step, the new parameters and buffer.

    With t, b the sizes of parameters and buffer: predictions <= A t (A = max_i sum_j
    |F_ij|), residuals <= R = A t + max |y|, the gradient's partial sums <= C R (C = 2 s
    max_j sum_i |F_ij|, s the loss scale), and weight decay, momentum and the learning
    rate multiply that by at most (1 + |wd|), (1 + m)^2 and (1 + lr).
    """

    n_params: int
    prediction_gain: Tensor  # (runs,) A
    y_size: Tensor  # (runs,) max |y|
    gradient_gain: Tensor  # (runs,) max(C, 1): the residuals themselves are numbers of the step too
    decay_gain: float
    step_gain: Tensor  # (runs,) (1 + lr) (1 + m)^2
    limit: float  # the dtype's largest value over the headroom

    @classmethod
    def of(cls, on_rows: RowLosses, index: Tensor, lrs: Tensor, settings: SGDSettings) -> "StepBound":
        features, y = (v.double().abs() for v in on_rows._data(index))
        return cls(features.shape[2], features.sum(dim=2).amax(dim=1), y.amax(dim=1),
                   (2 * on_rows.scale * features.sum(dim=1).amax(dim=1)).clamp(min=1.0),
                   1.0 + abs(settings.weight_decay), (1 + lrs.abs()) * (1 + abs(settings.momentum)) ** 2,
                   torch.finfo(on_rows.features.dtype).max / _HEADROOM)

    def rows(self, rows: Tensor) -> "StepBound":
        return StepBound(self.n_params, self.prediction_gain[rows], self.y_size[rows], self.gradient_gain[rows],
                         self.decay_gain, self.step_gain[rows], self.limit)

    def largest(self, z: Tensor) -> Tensor:
        """(runs,) bounds for (runs, q) states; 2-norms, which bound every entry (and, for
        plain SGD, grow monotonically once a run diverges, which the lifting relies on)."""
        p = self.n_params
        theta, buf = _norms(z[:, :p]), _norms(z[:, p:-1])
        residual = self.prediction_gain * theta + self.y_size
        return self.step_gain * (self.gradient_gain * residual + self.decay_gain * (theta + buf))

    def trusted(self, z: Tensor) -> Tensor:
        """Whether the training dtype, stepping from these states, would still only round (NaN: no)."""
        return torch.isfinite(z).all(dim=1) & (self.largest(z) <= self.limit)


def last_trusted_epochs(z: Tensor, start: int, end: int, first: Tensor, later: Tensor,
                        bound: StepBound) -> tuple[Tensor, Tensor]:
    """The last epoch in start..end at which each run's float64 state is trusted, and those states.

    `z`: the states at `start`; `first`, `later`: the runs' epoch matrices. Binary lifting
    (jumps of 2^i, largest first) takes O(log(end - start)) products; a jump through a
    power that overflowed in float64 gives a non-finite state, never trusted.
    """
    z = z.clone()  # advanced row by row below
    at = torch.full((len(z),), start, dtype=torch.long, device=z.device)
    climbing = bound.trusted(z)
    if start == 0 and end > 0:  # the first epoch has its own matrix (the buffer starts as the gradient)
        after_first = matrix_times(first, z)
        climbing &= bound.trusted(after_first)
        z = torch.where(climbing.unsqueeze(1), after_first, z)
        at[climbing] = 1
    span = end - int(at.min())
    for level, power in reversed(list(enumerate(doubling_powers(later, max(span, 1).bit_length())))):
        jumping = (climbing & (at + 2 ** level <= end)).nonzero().squeeze(1)
        if len(jumping) == 0:
            continue
        landed = matrix_times(power[jumping], z[jumping])
        safe = bound.rows(jumping).trusted(landed)
        z[jumping[safe]], at[jumping[safe]] = landed[safe], at[jumping[safe]] + 2 ** level
    return at, z


def _replay_gradient(on_rows: RowLosses, theta: Tensor, index: Tensor) -> Tensor:
    """The gradient in the order autograd forms it: MSELoss's backward scales the residuals
    by 2 s before the sum over rows, so its partial sums are as large as the reference
    loop's, and overflow where its do (`RowLosses.grad` scales after the sum: replaying with
    it, as before, 44 of the 720 float32 runs of the measurement above differed from the
    reference loop; with this, 16)."""
    features, y = on_rows._data(index)
    scaled = (predictions(theta, features) - y) * (2 * on_rows.scale)
    return torch.stack([row_sum(scaled * features[:, :, j]) for j in range(features.shape[2])], dim=1)


def _settled(theta: Tensor, buf: Optional[Tensor], new_theta: Tensor, new_buf: Optional[Tensor]) -> Tensor:
    """Runs whose later steps cannot change their parameters: all NaN (the predictions,
    so the gradient, are NaN from then on), or a state a step maps to itself bit for bit."""
    def same(a: Tensor, b: Tensor) -> Tensor:
        return ((a == b) | (a.isnan() & b.isnan())).all(dim=1)

    fixed = same(theta, new_theta)
    if buf is not None and new_buf is not None:
        fixed &= same(buf, new_buf)
    return new_theta.isnan().all(dim=1) | fixed


def _replay(on_rows: RowLosses, index: Tensor, z: Tensor, start: Tensor, end: int, lrs: Tensor,
            settings: SGDSettings) -> Tensor:
    """Parameters at epoch `end`, stepped one epoch at a time in the training dtype from
    each run's float64 state `z` at its epoch `start` (rounded to the training dtype).

    A run stops early once its parameters are settled (`_settled`): after an overflow they
    are all NaN within a few epochs, so a run that overflowed early in a long block costs
    a few steps, not the block.
    """
    p, dtype = on_rows.features.shape[2], on_rows.features.dtype
    theta = z[:, :p].to(dtype, copy=True)  # stepped in place: never a view of `z` (float64 training)
    buf = z[:, p:2 * p].to(dtype, copy=True) if settings.momentum != 0 else None
    left = end - start
    fresh = (start == 0) & (left > 0)
    if buf is not None and bool(fresh.any()):  # a first epoch: its buffer starts as the gradient
        rows = fresh.nonzero().squeeze(1)
        theta[rows], buf[rows] = sgd_update(theta[rows], _replay_gradient(on_rows, theta[rows], index[rows]),
                                            None, lrs[rows], settings)
        left = left - fresh.long()
    stepping = left > 0
    while bool(stepping.any()):
        rows = stepping.nonzero().squeeze(1)
        old_buf = None if buf is None else buf[rows]
        new_theta, new_buf = sgd_update(theta[rows], _replay_gradient(on_rows, theta[rows], index[rows]),
                                        old_buf, lrs[rows], settings)
        settled = _settled(theta[rows], old_buf, new_theta, new_buf)
        theta[rows] = new_theta
        if buf is not None:
            buf[rows] = new_buf
        left[rows] -= 1
        stepping[rows] = (left[rows] > 0) & ~settled
    return theta


def overflowed_parameters(on_rows: RowLosses, index: Tensor, z_start: Tensor, z_end: Tensor, start: int,
                          end: int, lrs: Tensor, settings: SGDSettings, first: Tensor, later: Tensor) -> Tensor:
    """Parameters at `end`, as the reference loop holds them, of runs whose numbers
    overflowed between epochs `start` (state `z_start`) and `end` (float64 state `z_end`)."""
    bound = StepBound.of(on_rows, index, lrs, settings)
    theta = z_end[:, :bound.n_params].to(on_rows.features.dtype, copy=True)
    # a run trusted at `end` overflowed in its loss only (squares, sums), which the rows give: no replay
    untrusted = (~bound.trusted(z_end)).nonzero().squeeze(1)
    if len(untrusted) == 0:
        return theta
    at, z = last_trusted_epochs(z_start[untrusted], start, end, first[untrusted], later[untrusted],
                                bound.rows(untrusted))
    theta[untrusted] = _replay(on_rows, index[untrusted], z, at, end, lrs[untrusted], settings)
    return theta


def train_gram(problem: Problem, runs: list[Run], train_settings: TrainSettings) -> list[RunResult]:
    """Train `runs` together; the results equal `train_reference`'s run by run, up to rounding."""
    start = time.perf_counter()
    settings = optimizer_settings(problem.parts.make_optim)
    if not isinstance(settings, SGDSettings):
        raise ValueError(f"the gram engine trains with SGD only; got {optimizer_name(problem.parts.make_optim)}")
    model = problem.parts.make_model().to(problem.device)
    x, y = chunk_data(problem, runs)
    p, n_values = len(problem.parts.param_names), y.shape[1] * y.shape[2]
    scale = loss_scale(problem.parts.loss_fn, n_values)
    features64, y64 = features_of(model, x.double()), y.double()[..., 0]
    g_mat, c_vec = gram_moments(features64, y64)
    lrs = torch.tensor([run.lr for run in runs], dtype=torch.float64, device=problem.device)
    maps = EpochMaps(epoch_matrix(2 * scale * g_mat, 2 * scale * c_vec, lrs, settings, first=True),
                     epoch_matrix(2 * scale * g_mat, 2 * scale * c_vec, lrs, settings, first=False))
    on_rows = RowLosses(features_of(model, x), y[..., 0], scale)
    moments = MomentLosses(g_mat, c_vec, RowLosses(features64, y64, scale).loss, scale)
    # a loss above this may overflow the dtype on its way (squares, sums): take it from the rows
    overflow_risk = torch.finfo(problem.dtype).max / (4 * n_values)

    theta0 = torch.stack([torch.nn.utils.parameters_to_vector(m.parameters()).detach()
                          for m in initial_models(problem, runs)]).double()
    q = state_size(p, settings)
    z = torch.zeros(len(runs), q, dtype=torch.float64, device=problem.device)
    z[:, :p], z[:, -1] = theta0, 1.0

    epochs, log_every = train_settings.epochs, train_settings.log_every
    runs_live, live_lrs = LiveRuns(theta0.to(problem.dtype)), lrs
    live = runs_live.index
    log = LossLog(len(runs), problem.device, problem.dtype)
    reached = 0
    for epoch in [*range(0, epochs, log_every), epochs]:
        z_before, z = z, maps.advance(z, reached, epoch)
        theta = z[:, :p].to(problem.dtype)  # what the reference would hold
        loss64 = moments.loss(theta.double())
        loss = loss64.to(problem.dtype)
        risky = ~(loss64 <= overflow_risk) | ~torch.isfinite(theta).all(dim=1)
        if bool(risky.any()):
            loss[risky] = on_rows.loss(theta[risky], live[risky])
        ok = torch.isfinite(loss) & torch.isfinite(theta).all(dim=1)
        if not bool(ok.all()):  # overflowed within the block: step its last epochs as the reference does
            bad = ~ok
            theta[bad] = overflowed_parameters(on_rows, live[bad], z_before[bad], z[bad], reached, epoch,
                                               live_lrs[bad], settings, maps.first[bad], maps.later[bad])
            loss[bad] = on_rows.loss(theta[bad], live[bad])
            ok = torch.isfinite(loss) & torch.isfinite(theta).all(dim=1)
        reached = epoch
        if epoch == epochs:
            runs_live.finish(theta)
            break
        log.add(epoch, live, loss)
        keep = runs_live.check(epoch, loss, theta)
        if keep is not None:
            z, live, live_lrs = z[keep], runs_live.index, live_lrs[keep]
            maps.keep(keep)
            moments.keep(keep)
            if not len(runs_live):
                break

    final = runs_live.final
    outcome = ChunkOutcome(final, on_rows.loss(final), on_rows.grad(final).norm(dim=1),
                           _held_out(problem, model, final), runs_live.stopped_at, log, *closed_forms(problem, x, y))
    return results_from(outcome, problem, runs, train_settings, ENGINE, time.perf_counter() - start)
