"""The Gram engine: full-batch SGD on a model linear in its parameters, fitted by MSE, on
moments only: a run costs its draw, one product of its row counts with the per-row products
(`moments.DrawMoments`), and p x p arithmetic per logged epoch, whatever the number of rows.

For prediction F theta (F: the features of a run's rows, each row weighed by its count) the
MSE gradient is 2 s (G theta - c), with G = F^T W F, c = F^T W y and s the loss scale (1/n
for the mean, 1 for the sum). So one epoch of SGD, momentum and weight decay included, is an
affine map of the state z = (theta, momentum buffer, 1): z <- M z. Its matrix M is read off
by applying the very update `torch.optim.SGD` makes (`stacked_optim.sgd_update`) to the unit
vectors. Between two logged epochs the engine applies M^k at once (repeated squaring), so a
run of 10,000 epochs logged every 100 takes about 100 small products. Losses (logged, final,
held out), gradients and closed forms come from the moments too, expanded around the OLS fit
of the original rows (`moments.RowProducts`), in float64. No tensor holds a run's rows.

Numbers: moments, M and the state are float64 whatever `train.dtype` is (they cost p^2 per
run, nothing); parameters are rounded to `train.dtype` wherever the reference loop would look
at them (divergence checks, losses, results), so a float32 run diverges like the float32
reference loop. A run whose loss nears the dtype's largest value is the exception: its
losses come from its rows in the training dtype, and if it overflowed between two logged
epochs its last epochs are stepped again there (`overflow`), so it overflows as the textbook
loop does. Each run's learning-rate bounds come from the same moments (`stability`).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from pipeline.core.runs import Run, RunBatch
from pipeline.core.settings import TrainSettings
from pipeline.train.engines.batched import train_batched
from pipeline.train.engines.divergence import LiveRuns
from pipeline.train.engines.moments import (
    EpochMaps,
    HeldOutLosses,
    MomentLosses,
    RowLosses,
    epoch_matrix,
    loss_scale,
    state_size,
)
from pipeline.train.engines.overflow import overflowed_parameters
from pipeline.train.engines.stability import moment_losses, run_stability
from pipeline.train.engines.stacked import ChunkOutcome, LossLog, batch_from, features_of, initial_vectors
from pipeline.train.engines.stacked_optim import SGDSettings, optimizer_name, optimizer_settings
from pipeline.train.problem import Problem, training_data

ENGINE = "gram"


def bytes_per_run(problem: Problem) -> int:
    """Memory one run needs: moments, epoch matrices and their powers, state, logged losses (no rows)."""
    p = len(problem.parts.param_names)
    q = 2 * p + 1
    return 8 * (4 * p * p + 12 * q * q + 8 * q + 64)


class RowsOf:
    """Losses and gradients from the rows of some runs, in the training dtype, as the reference
    loop computes them: only for runs near overflow (gathered when first needed)."""

    def __init__(self, problem: Problem, model: nn.Module, runs: list[Run], scale: float):
        self.problem, self.model, self.runs, self.scale = problem, model, runs, scale

    def of(self, positions: Tensor) -> RowLosses:
        x, y = training_data(self.problem, [self.runs[i] for i in positions.tolist()])
        return RowLosses(features_of(self.model, x), y[..., 0], self.scale)

    def held_out(self) -> RowLosses:
        rows = self.problem.x_test.shape[0] * self.problem.y_test.shape[1]
        features = self.model.features(self.problem.x_test).unsqueeze(0)
        return RowLosses(features, self.problem.y_test.T, loss_scale(self.problem.parts.loss_fn, rows))


def _held_out(problem: Problem, model: nn.Module, anchor: Tensor) -> HeldOutLosses:
    rows = problem.x_test.shape[0] * problem.y_test.shape[1]
    with torch.no_grad():
        features = model.features(problem.x_test.double())
    return HeldOutLosses(features, problem.y_test.double()[:, 0], anchor, loss_scale(problem.parts.loss_fn, rows))


def _in_dtype(loss64: Tensor, dtype: torch.dtype, limit: float) -> tuple[Tensor, Tensor]:
    """A float64 loss rounded to the training dtype, and where it is too large to trust, or not
    finite (as it is wherever the parameters are not): those the rows give, as the reference
    computes them."""
    return loss64.to(dtype), ~(loss64 <= limit)


def train_gram(problem: Problem, runs: list[Run], train_settings: TrainSettings) -> RunBatch:
    """Train `runs` (one resample size) together; the results equal `train_reference`'s run by
    run, up to rounding."""
    start = time.perf_counter()
    settings = optimizer_settings(problem.parts.make_optim)
    if not isinstance(settings, SGDSettings):
        raise ValueError(f"the gram engine trains with SGD only; got {optimizer_name(problem.parts.make_optim)}")
    models, theta0 = initial_vectors(problem, runs)
    model = models[0]  # for its features only (they do not depend on the parameters): no second build
    p, dtype = len(problem.parts.param_names), problem.dtype
    losses = moment_losses(problem, runs)
    if losses is None:  # x beyond the dtype's range: no moments; the rows diverge as the reference's do
        return train_batched(problem, runs, train_settings)
    scale = losses.scale
    lrs = torch.tensor([run.lr for run in runs], dtype=torch.float64, device=problem.device)
    h_mat, h_vec = 2 * scale[:, None, None] * losses.gram, 2 * scale[:, None] * losses.theta_cross()
    maps = EpochMaps(
        epoch_matrix(h_mat, h_vec, lrs, settings, first=True), epoch_matrix(h_mat, h_vec, lrs, settings, first=False)
    )
    n_values = int(losses.moments.n_rows[0]) * problem.y.shape[1] if runs else 1
    rows_of = RowsOf(problem, model, runs, loss_scale(problem.parts.loss_fn, n_values))
    # a loss above this may overflow the dtype on its way (squares, sums): take it from the rows
    overflow_risk = torch.finfo(dtype).max / (4 * n_values)

    theta0 = theta0.double()
    q = state_size(p, settings)
    z = torch.zeros(len(runs), q, dtype=torch.float64, device=problem.device)
    z[:, :p], z[:, -1] = theta0, 1.0

    epochs, log_every = train_settings.epochs, train_settings.log_every
    runs_live, live_lrs = LiveRuns(theta0.to(dtype)), lrs
    live, live_losses = runs_live.index, MomentLosses(losses.products, losses.moments, scale)
    log = LossLog(len(runs), problem.device, dtype)
    reached = 0
    for epoch in [*range(0, epochs, log_every), epochs]:
        z_before, z = z, maps.advance(z, reached, epoch)
        theta = z[:, :p].to(dtype)  # what the reference would hold
        loss, risky = _in_dtype(live_losses.loss(theta.double()), dtype, overflow_risk)
        if not bool(risky.any()):  # every loss, so every parameter, finite and far from overflow
            reached = epoch
            if epoch == epochs:
                runs_live.finish(theta)
                break
            log.add(epoch, live, loss)
            continue
        at = risky.nonzero().squeeze(1)
        loss[at] = rows_of.of(live[at]).loss(theta[at])
        ok = torch.isfinite(loss) & torch.isfinite(theta).all(dim=1)
        if not bool(ok.all()):  # overflowed within the block: step its last epochs as the reference does
            bad = (~ok).nonzero().squeeze(1)
            on_rows = rows_of.of(live[bad])
            inside = torch.arange(len(bad), device=bad.device)
            theta[bad] = overflowed_parameters(
                on_rows, inside, z_before[bad], z[bad], reached, epoch, live_lrs[bad], settings,
                maps.first[bad], maps.later[bad],
            )  # fmt: skip
            loss[bad] = on_rows.loss(theta[bad])
        reached = epoch
        if epoch == epochs:
            runs_live.finish(theta)
            break
        log.add(epoch, live, loss)
        keep = runs_live.check(epoch, loss, theta)
        if keep is not None:
            z, live, live_lrs = z[keep], runs_live.index, live_lrs[keep]
            maps.keep(keep)
            live_losses.keep(keep)
            if not len(runs_live):
                break

    final = runs_live.final
    final64 = final.double()
    final_loss, risky = _in_dtype(losses.loss(final64), dtype, overflow_risk)
    grad_norm = losses.grad(final64).norm(dim=1).to(dtype)
    test_loss = None
    if problem.x_test is not None:
        test_loss = _held_out(problem, model, losses.products.anchor).loss(final64).to(dtype)
    if bool(risky.any()):  # the reference's own arithmetic, where it overflows or nearly does
        at = risky.nonzero().squeeze(1)
        on_rows = rows_of.of(at)
        final_loss[at] = on_rows.loss(final[at])
        grad_norm[at] = on_rows.grad(final[at]).norm(dim=1)
        if test_loss is not None:
            test_loss[at] = rows_of.held_out().loss(final[at])
    outcome = ChunkOutcome(
        final,
        final_loss,
        grad_norm,
        test_loss,
        runs_live.stopped_at,
        log,
        *losses.closed_form(),
        stability=run_stability(problem, runs, train_settings, losses, theta0),
    )
    return batch_from(outcome, problem, runs, train_settings, ENGINE, time.perf_counter() - start)
