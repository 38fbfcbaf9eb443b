"""The Gram engine: full-batch SGD on a model linear in its parameters, fitted by MSE,
at a cost per epoch that does not depend on the number of rows.

For prediction F theta (F: the features of a run's rows, as `problem.training_data` gives
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
from typing import Optional

import torch
from torch import Tensor, nn

from pipeline.core.runs import Run, RunBatch
from pipeline.core.settings import TrainSettings
from pipeline.train.engines.divergence import LiveRuns
from pipeline.train.engines.moments import (
    EpochMaps,
    MomentLosses,
    RowLosses,
    epoch_matrix,
    gram_moments,
    loss_scale,
    state_size,
)
from pipeline.train.engines.overflow import overflowed_parameters
from pipeline.train.engines.stacked import (
    ChunkOutcome,
    LossLog,
    batch_from,
    closed_forms,
    features_of,
    initial_vectors,
)
from pipeline.train.engines.stacked_optim import SGDSettings, optimizer_name, optimizer_settings
from pipeline.train.problem import Problem, training_data

ENGINE = "gram"


def bytes_per_run(problem: Problem) -> int:
    """Memory one run needs: its data and their features (float64 and the training dtype), M and its powers."""
    n, width = problem.x.shape[0], problem.x.shape[1] + problem.y.shape[1]
    p = len(problem.parts.param_names)
    q = 2 * p + 1
    itemsize = torch.finfo(problem.dtype).bits // 8
    return 8 * (n * (p + width + 1) + 8 * q * q) + itemsize * n * (width + p + 2)


def _held_out(problem: Problem, model: nn.Module, theta: Tensor) -> Optional[Tensor]:
    if problem.x_test is None:
        return None
    rows = problem.x_test.shape[0] * problem.y_test.shape[1]
    test = RowLosses(
        model.features(problem.x_test).unsqueeze(0), problem.y_test.T, loss_scale(problem.parts.loss_fn, rows)
    )
    return test.loss(theta)


def train_gram(problem: Problem, runs: list[Run], train_settings: TrainSettings) -> RunBatch:
    """Train `runs` together; the results equal `train_reference`'s run by run, up to rounding."""
    start = time.perf_counter()
    settings = optimizer_settings(problem.parts.make_optim)
    if not isinstance(settings, SGDSettings):
        raise ValueError(f"the gram engine trains with SGD only; got {optimizer_name(problem.parts.make_optim)}")
    models, theta0 = initial_vectors(problem, runs)
    model = models[0]  # for its features only (they do not depend on the parameters): no second build
    x, y = training_data(problem, runs)
    p, n_values = len(problem.parts.param_names), y.shape[1] * y.shape[2]
    scale = loss_scale(problem.parts.loss_fn, n_values)
    features64, y64 = features_of(model, x.double()), y.double()[..., 0]
    g_mat, c_vec = gram_moments(features64, y64)
    lrs = torch.tensor([run.lr for run in runs], dtype=torch.float64, device=problem.device)
    maps = EpochMaps(
        epoch_matrix(2 * scale * g_mat, 2 * scale * c_vec, lrs, settings, first=True),
        epoch_matrix(2 * scale * g_mat, 2 * scale * c_vec, lrs, settings, first=False),
    )
    on_rows = RowLosses(features_of(model, x), y[..., 0], scale)
    moments = MomentLosses(g_mat, c_vec, RowLosses(features64, y64, scale).loss, scale)
    # a loss above this may overflow the dtype on its way (squares, sums): take it from the rows
    overflow_risk = torch.finfo(problem.dtype).max / (4 * n_values)

    theta0 = theta0.double()
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
            theta[bad] = overflowed_parameters(
                on_rows,
                live[bad],
                z_before[bad],
                z[bad],
                reached,
                epoch,
                live_lrs[bad],
                settings,
                maps.first[bad],
                maps.later[bad],
            )
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
    outcome = ChunkOutcome(
        final,
        on_rows.loss(final),
        on_rows.grad(final).norm(dim=1),
        _held_out(problem, model, final),
        runs_live.stopped_at,
        log,
        *closed_forms(problem, x, y, features64),
    )
    return batch_from(outcome, problem, runs, train_settings, ENGINE, time.perf_counter() - start)
