"""The experiment as the engines train it: model, loss and optimiser built from their
`_target_` specs, checked against the data, and the data on the task's device.

`ProblemParts` is built once per process (the submitting one checks it, each task
builds its own); `Problem` adds the data tensors on a device and in a dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, Callable, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.core.resampling import DRAW_RULE, Draws, draw, original_fit
from pipeline.core.runs import Run
from pipeline.data.load import Dataset
from pipeline.models import is_linear_in_parameters, scalar_parameter_names


@dataclass(frozen=True)
class ProblemParts:
    """The instantiated pieces of an experiment, checked against its data."""

    make_model: Callable[[], nn.Module]
    loss_fn: nn.Module
    make_optim: Callable[..., torch.optim.Optimizer]
    param_names: tuple[str, ...]
    closed_form: bool  # linear in its parameters and fitted by MSE: OLS is the optimum

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    @cached_property
    def optimum_known(self) -> bool:
        """Whether the closed-form least-squares fit is the optimum the optimiser approaches:
        a closed form, and no weight decay (whose optimum is the ridge fit) nor maximize."""
        if not self.closed_form:
            return False
        _, defaults = probe_optimizer(self.make_optim, lr=1e-3)
        return not defaults.get("weight_decay") and not defaults.get("maximize", False)


@dataclass
class Problem:
    """What every run of a task shares: the parts, and the data on the task's device."""

    parts: ProblemParts
    x: torch.Tensor
    y: torch.Tensor
    x_test: Optional[torch.Tensor]
    y_test: Optional[torch.Tensor]
    device: torch.device
    dtype: torch.dtype
    draw_rule: str = DRAW_RULE  # the sweep folder's (`SweepMeta.draw_rule`)
    draw_settings: Optional[dict[str, Any]] = None  # block length, wild weights (`SweepMeta.draw_settings`)

    @property
    def n_rows(self) -> int:
        return self.x.shape[0]

    @cached_property
    def original_fit(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(coefficients, fitted values, residuals) of the OLS fit on the original rows, float64:
        what `residual` draws rebuild y from, and where the Gram engine expands its losses."""
        with torch.no_grad():
            features = self.parts.make_model().features(self.x.double().cpu())
        return original_fit(features.numpy(), self.y.double().cpu().numpy()[:, 0])

    @property
    def residual_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """Fitted values and residuals of the OLS fit on the original rows (`residual` draws)."""
        return self.original_fit[1:]


def run_draws(problem: Problem, runs: list[Run]) -> Draws:
    """The draws of `runs` (all of one size), by the sweep's draw rule (`core.resampling`)."""
    return draw(
        problem.n_rows,
        [r.seed for r in runs],
        [r.resample for r in runs],
        [r.scheme for r in runs],
        problem.draw_rule,
        problem.draw_settings,
    )


def training_data(problem: Problem, runs: list[Run]) -> tuple[torch.Tensor, torch.Tensor]:
    """(runs, rows, x columns) and (runs, rows, y columns): the data each run trains on, on the
    device. A scheme that rebuilds y (residual) gets it from `Draws.responses` in float64,
    rounded to the training dtype once; every other run takes y's own rows."""
    draws = run_draws(problem, runs)
    rows = torch.as_tensor(draws.rows, device=problem.device)
    x, y = problem.x[rows], problem.y[rows]
    if draws.rebuilt.any():
        at = np.flatnonzero(draws.rebuilt)
        rebuilt = draws.take(at).responses(problem.y.double().cpu().numpy()[:, 0], *problem.residual_parts)
        y[torch.as_tensor(at, device=problem.device)] = torch.as_tensor(
            rebuilt, device=problem.device, dtype=problem.dtype
        ).unsqueeze(-1)
    return x, y


def resample_data(problem: Problem, run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) one run trains on (`training_data` of that run alone): the textbook loop's data,
    whose rows are the definition of each scheme's draw."""
    x, y = training_data(problem, [run])
    return x[0], y[0]


def _instantiate(spec: Any, key: str, **kwargs: Any) -> Any:
    try:
        return instantiate(spec, **kwargs)
    except Exception as err:  # noqa: BLE001 - Hydra wraps import and argument errors alike
        target = spec.get("_target_") if isinstance(spec, dict) else spec
        raise ConfigError([f"`{key}._target_` {target!r} cannot be built: {err}"]) from err


def build_problem_parts(
    model: dict[str, Any], loss: dict[str, Any], optim: dict[str, Any], dataset: Dataset
) -> ProblemParts:
    """Instantiate model, loss and optimiser once, and check the model fits the data."""
    make_model = partial(_instantiate, model, "model")
    built = make_model()
    loss_fn = _instantiate(loss, "loss")
    make_optim = _instantiate(optim, "optim", _partial_=True)
    with torch.no_grad():
        try:
            out = built(torch.tensor(dataset.x[:2], dtype=torch.float32))
        except Exception as err:  # noqa: BLE001
            raise ConfigError(
                [f"`model`: forward pass on 2 rows of {dataset.x.shape[1]} x columns failed: {err}"]
            ) from err
    if tuple(out.shape) != (min(2, dataset.n_rows), dataset.y.shape[1]):
        raise ConfigError(
            [
                f"`model`: output shape {tuple(out.shape)} does not match y {dataset.y_names} "
                f"(expected (rows, {dataset.y.shape[1]}))"
            ]
        )
    closed_form = is_linear_in_parameters(built) and isinstance(loss_fn, nn.MSELoss)
    return ProblemParts(make_model, loss_fn, make_optim, tuple(scalar_parameter_names(built)), closed_form)


_EMPTY_PARAMS = "empty parameter list"


def probe_optimizer(make_optim: Callable[..., torch.optim.Optimizer], lr: float = 1.0) -> tuple[type, dict[str, Any]]:
    """The optimiser's class and settings (its `defaults`), checked by the class itself.

    Building an optimiser on real parameters imports torch._dynamo (about 1 s, in the
    submitting process and again in every task): `Optimizer.add_param_group` is wrapped by
    `torch._disable_dynamo`. Given no parameters, torch's optimisers check their arguments,
    set `defaults`, and stop with "empty parameter list" before adding a group, so that is
    what we build. Any other error is the user's optimiser spec; an optimiser that accepts
    an empty list is probed on one parameter, as before.
    """
    cls = make_optim.func if isinstance(make_optim, partial) else None
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
        optimizer = cls.__new__(cls)
        try:
            cls.__init__(optimizer, *make_optim.args, [], **{**make_optim.keywords, "lr": lr})
        except ValueError as err:
            if _EMPTY_PARAMS not in str(err) or not hasattr(optimizer, "defaults"):
                raise
            return cls, dict(optimizer.defaults)
    built = make_optim([torch.zeros(1, requires_grad=True)], lr=lr)
    return type(built), dict(built.defaults)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_problem(
    parts: ProblemParts,
    dataset: Dataset,
    *,
    device: str = "auto",
    dtype: str = "float32",
    draw_rule: str = DRAW_RULE,
    draw_settings: Optional[dict[str, Any]] = None,
) -> Problem:
    """The parts and the data as tensors on `device` in `dtype` (`train.device`, `train.dtype`);
    `draw_rule` and `draw_settings`: how its bootstrap draws are made (the sweep folder's)."""
    on_device = partial(
        torch.tensor, device=pick_device(device), dtype=getattr(torch, dtype)
    )  # a copy: pandas arrays may be read-only
    has_test = dataset.x_test is not None
    return Problem(
        parts,
        on_device(dataset.x),
        on_device(dataset.y),
        on_device(dataset.x_test) if has_test else None,
        on_device(dataset.y_test) if has_test else None,
        pick_device(device),
        getattr(torch, dtype),
        draw_rule,
        draw_settings,
    )


def new_model(problem: Problem, run: Run) -> nn.Module:
    """The run's model on the device, from its init vector or a seeded default init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed * 100_003 + run.init_index)
        model = problem.parts.make_model()
    model = model.to(device=problem.device, dtype=problem.dtype)
    if run.init is not None:
        vec = torch.tensor(run.init, device=problem.device, dtype=problem.dtype)
        nn.utils.vector_to_parameters(vec, model.parameters())
    return model


LINEARITY_RTOL = 1e-9  # float64: a model linear in its parameters agrees to rounding


def linear_in_params(parts: ProblemParts, dataset: Dataset) -> bool:
    """Whether the model's output is linear in its parameters, f(a t1 + b t2) = a f(t1) + b f(t2),
    checked in float64 at two random parameter vectors on (up to 64 of) the data's rows.

    Linear: each parameter is a coefficient of a fixed feature and means what it says. Not
    linear (an MLP: hidden units can swap, signs flip): single parameters need not be
    identifiable, and the answer is what the model predicts instead."""
    if is_linear_in_parameters(parts.make_model()):
        return True
    try:
        model = parts.make_model().to(torch.float64)
        x = torch.tensor(dataset.x[:64], dtype=torch.float64)
        generator = torch.Generator().manual_seed(0)
        n = sum(p.numel() for p in model.parameters())
        t1, t2 = (
            torch.randn(n, generator=generator, dtype=torch.float64),
            torch.randn(n, generator=generator, dtype=torch.float64),
        )

        def output(vector: torch.Tensor) -> torch.Tensor:
            nn.utils.vector_to_parameters(vector, model.parameters())
            return model(x)

        with torch.no_grad():
            mixed, separate = output(0.7 * t1 - 1.3 * t2), 0.7 * output(t1) - 1.3 * output(t2)
    except Exception:  # noqa: BLE001 - a model that cannot be probed this way is not known to be linear
        return False
    scale = float(separate.abs().max()) or 1.0
    return bool(torch.allclose(mixed, separate, rtol=LINEARITY_RTOL, atol=LINEARITY_RTOL * scale))


def design_matrix(parts: ProblemParts, dataset: Dataset) -> Optional[tuple[Any, Any]]:
    """(features, response) of the original rows in float64, for the closed-form intervals;
    None when the model has no closed form. Saved in the sweep folder at launch."""
    if not parts.closed_form:
        return None
    with torch.no_grad():
        features = parts.make_model().features(torch.tensor(dataset.x, dtype=torch.float64))
    return features.numpy(), dataset.y[:, 0]
