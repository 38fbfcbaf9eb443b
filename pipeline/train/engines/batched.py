"""The batched engine: a whole chunk of runs of any `nn.Module` as one computation.

The runs' parameters are stacked, one flat vector per run; one call of
`vmap(grad_and_value(loss))` gives every run's loss and gradient on its own resample,
and a stacked optimiser (`stacked_optim`) steps them all, each with its own learning
rate. A run found diverged at a logged epoch leaves the batch with the parameters
it had there; the others go on, unaware of it.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from pipeline.core.runs import Run, RunBatch
from pipeline.core.settings import TrainSettings
from pipeline.train.engines.divergence import LiveRuns
from pipeline.train.engines.explicit import StackedNet, explicit_net
from pipeline.train.engines.stability import moment_losses, run_stability
from pipeline.train.engines.stacked import ChunkOutcome, LossLog, batch_from, initial_vectors
from pipeline.train.engines.stacked_optim import optimizer_name, optimizer_settings, stacked_optimizer
from pipeline.train.problem import Problem, training_data

ENGINE = "batched"
BLOCK = 1024  # runs per batch, padded: one shape for every batch (fewer when memory says so)


def _activations_per_row(model: nn.Module, x: Tensor) -> int:
    """Numbers every module outputs for one row: what a forward pass keeps for backward."""
    total = 0

    def count(_module: nn.Module, _inputs: Any, out: Any) -> None:
        nonlocal total
        total += out.numel() if isinstance(out, Tensor) else 0

    handles = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return total


def bytes_per_run(problem: Problem) -> int:
    """Memory one run of a batch needs: its rows, activations, gradients and optimiser state."""
    model = problem.parts.make_model().to(device=problem.device, dtype=problem.dtype)
    n, width = problem.x.shape[0], problem.x.shape[1] + problem.y.shape[1]
    n_params = sum(p.numel() for p in model.parameters())
    itemsize = torch.finfo(problem.dtype).bits // 8
    # forward activations and their gradients, with room for autograd's temporaries
    numbers = n * width + 4 * n * _activations_per_row(model, problem.x) + 8 * n_params
    return itemsize * numbers


def _unflatten(model: nn.Module) -> Callable[[Tensor], dict[str, Tensor]]:
    """vector -> {name: view}: one run's flat parameter vector as the model's parameters."""
    layout = [(name, p.shape, p.numel()) for name, p in model.named_parameters()]

    def unflatten(vec: Tensor) -> dict[str, Tensor]:
        views, offset = {}, 0
        for name, shape, numel in layout:
            views[name] = vec[offset : offset + numel].view(shape)
            offset += numel
        return views

    return unflatten


def _run_loss(model: nn.Module, loss_fn: nn.Module) -> Callable[..., Tensor]:
    """loss(flat params, buffers, x, y) of one run.

    The parameters travel as one flat vector per run, so gradients, optimiser state
    and divergence checks are single (runs, n_params) tensors: a few kernels per
    epoch whatever the number of parameter tensors.
    """
    base = copy.deepcopy(model).to("meta")  # the structure only; values come from the vector
    unflatten = _unflatten(model)

    def loss(vec: Tensor, buffers: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(functional_call(base, (unflatten(vec), buffers), (x,)), y)

    return loss


class GenericNet:
    """Any module: `vmap(grad_and_value(loss))` over the runs (torch.func)."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, buffers: dict[str, Tensor]):
        self.run_loss, self.buffers = _run_loss(model, loss_fn), buffers
        self.loss_and_grads = vmap(grad_and_value(self.run_loss))

    def prepare(self, x: Tensor) -> Tensor:
        return x

    def loss_and_grad(self, params: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        grads, loss = self.loss_and_grads(params, self.buffers, x, y)
        return loss, grads


def _held_out(problem: Problem, net: Union[StackedNet, GenericNet], params: Tensor) -> Optional[Tensor]:
    if problem.x_test is None:
        return None
    runs = len(params)
    x = problem.x_test.expand(runs, *problem.x_test.shape)
    y = problem.y_test.expand(runs, *problem.y_test.shape)
    with torch.no_grad():
        return net.loss_and_grad(params, net.prepare(x), y)[0]


def padded(runs: list[Run], block: Optional[int]) -> list[Run]:
    """`runs` and copies of the first, `block` in all: every batch has one shape, so every run
    goes through the same kernels whatever its company (copies' results are dropped)."""
    return runs + [runs[0]] * (block - len(runs)) if block and len(runs) < block else runs


def train_batched(problem: Problem, runs: list[Run], settings: TrainSettings, block: Optional[int] = None) -> RunBatch:
    """Train `runs` together, in a batch of `block` runs (padded; None: as many as given); the
    results equal `train_reference`'s run by run, up to rounding.

    A run found diverged at a logged epoch keeps the parameters it had there; it goes on
    stepping with the others (masked, not removed), so the batch keeps its shape."""
    start = time.perf_counter()
    optim_settings = optimizer_settings(problem.parts.make_optim)
    if optim_settings is None:
        raise ValueError(f"the batched engine cannot step {optimizer_name(problem.parts.make_optim)}")
    real, runs = len(runs), padded(runs, block)
    models, params = initial_vectors(problem, runs)
    _, buffers = stack_module_state(models)  # constant buffers (stateful modules are refused)
    net = explicit_net(models[0], problem.parts.loss_fn) or GenericNet(models[0], problem.parts.loss_fn, buffers)
    x_all, y = training_data(problem, runs)
    x = net.prepare(x_all)
    lrs = torch.tensor([run.lr for run in runs], dtype=torch.float64, device=problem.device)
    optimizer = stacked_optimizer(optim_settings, lrs)

    live = LiveRuns(params)
    log = LossLog(len(runs), problem.device, problem.dtype)
    for epoch in range(settings.epochs):
        loss, grads = net.loss_and_grad(params, x, y)
        if epoch % settings.log_every == 0:  # one host sync per logged epoch, as in the reference loop
            index = live.index
            log.add(epoch, index, loss if len(index) == len(runs) else loss[index])
            live.check(epoch, loss[index], params[index])
            if not len(live):
                break
        params = optimizer.step({"params": params}, {"params": grads})["params"]
    live.finish(params[live.index])

    final_loss, grads = net.loss_and_grad(live.final, x, y)
    outcome = ChunkOutcome(
        live.final, final_loss, grads.norm(dim=1), _held_out(problem, net, live.final), live.stopped_at, log
    ).head(real)
    runs = runs[:real]
    if problem.parts.closed_form:  # the closed form and bounds from the runs' moments, as the Gram engine's
        losses = moment_losses(problem, runs)
        nan = torch.full((real,), torch.nan, dtype=torch.float64)
        outcome.ols, outcome.ols_loss, outcome.ols_rank = (
            (nan[:, None].repeat(1, params.shape[1]), nan, None) if losses is None else losses.closed_form()
        )
        outcome.stability = run_stability(problem, runs, settings, losses)
    return batch_from(outcome, problem, runs, settings, ENGINE, time.perf_counter() - start)
