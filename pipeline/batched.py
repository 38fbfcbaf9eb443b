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
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from pipeline.plan import Run
from pipeline.stacked import ChunkOutcome, LossLog, chunk_data, closed_forms, initial_models, results_from
from pipeline.stacked_optim import optimizer_name, optimizer_settings, stacked_optimizer
from pipeline.train import Problem, RunResult

ENGINE = "batched"


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
            views[name] = vec[offset:offset + numel].view(shape)
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


def train_batched(problem: Problem, runs: list[Run], train_cfg: dict[str, Any]) -> list[RunResult]:
    """Train `runs` together; the results equal `train_reference`'s run by run, up to rounding."""
    start = time.perf_counter()
    settings = optimizer_settings(problem.parts.make_optim)
    if settings is None:
        raise ValueError(f"the batched engine cannot step {optimizer_name(problem.parts.make_optim)}")
    models = initial_models(problem, runs)
    _, buffers = stack_module_state(models)  # constant buffers (stateful modules are refused)
    params = torch.stack([nn.utils.parameters_to_vector(m.parameters()).detach() for m in models])
    x_all, y_all = chunk_data(problem, runs)
    run_loss = _run_loss(models[0], problem.parts.loss_fn)
    loss_and_grads = vmap(grad_and_value(run_loss))
    lrs = torch.tensor([run.lr for run in runs], dtype=torch.float64, device=problem.device)
    optimizer = stacked_optimizer(settings, lrs)

    epochs, log_every = int(train_cfg["epochs"]), int(train_cfg["log_every"])
    live = torch.arange(len(runs), device=problem.device)
    final = params.clone()
    stopped_at: list[Optional[int]] = [None] * len(runs)
    log = LossLog(len(runs), problem.device, problem.dtype)
    x, y, bufs = x_all, y_all, buffers
    for epoch in range(epochs):
        grads, loss = loss_and_grads(params, bufs, x, y)
        if epoch % log_every == 0:  # one host sync per logged epoch, as in the reference loop
            log.add(epoch, live, loss)
            ok = torch.isfinite(loss) & torch.isfinite(params).all(dim=1)
            if not bool(ok.all()):
                final[live[~ok]] = params[~ok]
                for i in live[~ok].tolist():
                    stopped_at[i] = epoch
                keep = ok.nonzero().squeeze(1)
                params, grads, live, x, y = params[keep], grads[keep], live[keep], x[keep], y[keep]
                bufs = {k: v[keep] for k, v in bufs.items()}
                optimizer.keep(keep)
                if len(live) == 0:
                    break
        params = optimizer.step({"params": params}, {"params": grads})["params"]
    final[live] = params

    grads, final_loss = loss_and_grads(final, buffers, x_all, y_all)
    with torch.no_grad():
        test_loss = None if problem.x_test is None else vmap(run_loss, in_dims=(0, 0, None, None))(
            final, buffers, problem.x_test, problem.y_test)
    outcome = ChunkOutcome(final, final_loss, grads.norm(dim=1), test_loss, stopped_at, log)
    if problem.parts.closed_form:
        outcome.ols, outcome.ols_loss = closed_forms(problem, x_all, y_all)
    return results_from(outcome, problem, runs, train_cfg, ENGINE, time.perf_counter() - start)
