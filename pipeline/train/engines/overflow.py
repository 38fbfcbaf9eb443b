"""Runs that overflow between two logged epochs in the Gram engine: where to start stepping
them again in the training dtype (binary lifting over matrix powers), and the stepping.
Why this reproduces the textbook loop is said at the top of the code below."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from pipeline.train.engines.moments import RowLosses, matrix_product, matrix_times, predictions, row_sum
from pipeline.train.engines.stacked_optim import SGDSettings, sgd_update

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
# their overflow (every gram family of tests/integration/test_batched.py, float32 and float64): 21
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
_HEADROOM = 2.0**10


def _squared(matrices: Tensor) -> Tensor:
    """(runs, q, q) -> their squares, elementwise like `matrix_times` (the same bits in any batch)."""
    return matrix_product(matrices, matrices)


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
        return cls(
            features.shape[2],
            features.sum(dim=2).amax(dim=1),
            y.amax(dim=1),
            (2 * on_rows.scale * features.sum(dim=1).amax(dim=1)).clamp(min=1.0),
            1.0 + abs(settings.weight_decay),
            (1 + lrs.abs()) * (1 + abs(settings.momentum)) ** 2,
            torch.finfo(on_rows.features.dtype).max / _HEADROOM,
        )

    def rows(self, rows: Tensor) -> "StepBound":
        return StepBound(
            self.n_params,
            self.prediction_gain[rows],
            self.y_size[rows],
            self.gradient_gain[rows],
            self.decay_gain,
            self.step_gain[rows],
            self.limit,
        )

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


def last_trusted_epochs(
    z: Tensor, start: int, end: int, first: Tensor, later: Tensor, bound: StepBound
) -> tuple[Tensor, Tensor]:
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
        jumping = (climbing & (at + 2**level <= end)).nonzero().squeeze(1)
        if len(jumping) == 0:
            continue
        landed = matrix_times(power[jumping], z[jumping])
        safe = bound.rows(jumping).trusted(landed)
        z[jumping[safe]], at[jumping[safe]] = landed[safe], at[jumping[safe]] + 2**level
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


def _replay(
    on_rows: RowLosses, index: Tensor, z: Tensor, start: Tensor, end: int, lrs: Tensor, settings: SGDSettings
) -> Tensor:
    """Parameters at epoch `end`, stepped one epoch at a time in the training dtype from
    each run's float64 state `z` at its epoch `start` (rounded to the training dtype).

    A run stops early once its parameters are settled (`_settled`): after an overflow they
    are all NaN within a few epochs, so a run that overflowed early in a long block costs
    a few steps, not the block.
    """
    p, dtype = on_rows.features.shape[2], on_rows.features.dtype
    theta = z[:, :p].to(dtype, copy=True)  # stepped in place: never a view of `z` (float64 training)
    buf = z[:, p : 2 * p].to(dtype, copy=True) if settings.momentum != 0 else None
    left = end - start
    fresh = (start == 0) & (left > 0)
    if buf is not None and bool(fresh.any()):  # a first epoch: its buffer starts as the gradient
        rows = fresh.nonzero().squeeze(1)
        theta[rows], buf[rows] = sgd_update(
            theta[rows], _replay_gradient(on_rows, theta[rows], index[rows]), None, lrs[rows], settings
        )
        left = left - fresh.long()
    stepping = left > 0
    while bool(stepping.any()):
        rows = stepping.nonzero().squeeze(1)
        old_buf = None if buf is None else buf[rows]
        new_theta, new_buf = sgd_update(
            theta[rows], _replay_gradient(on_rows, theta[rows], index[rows]), old_buf, lrs[rows], settings
        )
        settled = _settled(theta[rows], old_buf, new_theta, new_buf)
        theta[rows] = new_theta
        if buf is not None:
            buf[rows] = new_buf
        left[rows] -= 1
        stepping[rows] = (left[rows] > 0) & ~settled
    return theta


def overflowed_parameters(
    on_rows: RowLosses,
    index: Tensor,
    z_start: Tensor,
    z_end: Tensor,
    start: int,
    end: int,
    lrs: Tensor,
    settings: SGDSettings,
    first: Tensor,
    later: Tensor,
) -> Tensor:
    """Parameters at `end`, as the reference loop holds them, of runs whose numbers
    overflowed between epochs `start` (state `z_start`) and `end` (float64 state `z_end`)."""
    bound = StepBound.of(on_rows, index, lrs, settings)
    theta = z_end[:, : bound.n_params].to(on_rows.features.dtype, copy=True)
    # a run trusted at `end` overflowed in its loss only (squares, sums), which the rows give: no replay
    untrusted = (~bound.trusted(z_end)).nonzero().squeeze(1)
    if len(untrusted) == 0:
        return theta
    at, z = last_trusted_epochs(
        z_start[untrusted], start, end, first[untrusted], later[untrusted], bound.rows(untrusted)
    )
    theta[untrusted] = _replay(on_rows, index[untrusted], z, at, end, lrs[untrusted], settings)
    return theta
