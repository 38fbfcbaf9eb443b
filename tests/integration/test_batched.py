"""Issue 5 acceptance: the fast engines give the reference loop's numbers, run by run.

Every model family of the course seeds is trained as one chunk by each fast engine
that applies and, run by run, by `train_reference`; the two must agree on status,
epochs and logged epochs exactly, and on parameters, final / test loss and the loss
curve within

    float64: 1e-8 relative;  float32: 1e-4 relative

Parameters are compared relative to the run's largest parameter (in a diverging run
the small components are differences of huge numbers); other values elementwise,
with an absolute floor of 1e-10 / 1e-6 for values that are zero up to rounding, and a
wider floor for the final gradient norm, which at an optimum is rounding noise.
Each chunk mixes learning rates, initial values and resamples (bootstrap draws, jackknife
runs one row short, residual-resampling draws, block-bootstrap and wild draws) and holds a
run that diverges.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.core.errors import ConfigError
from pipeline.core.runs import BLOCK_SCHEMES, DIVERGED, MAMMEN, RESIDUAL, WILD, Run, RunResult
from pipeline.core.settings import TrainSettings
from pipeline.data.load import Dataset, load_dataset
from pipeline.launch.prepare import validate
from pipeline.models import FeatureModel
from pipeline.sweep.plan import plan
from pipeline.train import engines
from pipeline.train.engines import batch_memory as memory
from pipeline.train.engines import train_chunk, train_reference
from pipeline.train.engines.moments import row_sum
from pipeline.train.problem import Problem
from tests.conftest import make_config, problem_from, run_sweep

pytestmark = pytest.mark.engines  # benchmarks/gpu_check.sh runs these on CUDA too

TOL = {"float64": dict(rtol=1e-8, atol=1e-10), "float32": dict(rtol=1e-4, atol=1e-6)}
GRAD_ATOL = {"float64": 1e-7, "float32": 1e-4}
EPOCHS, LOG_EVERY = 200, 20


class Slope(FeatureModel):
    """y = w x (seed 001's first fit)."""

    def __init__(self):
        super().__init__(["w"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


class Hinge(FeatureModel):
    """y = b + w1 relu(x) + w2 relu(x - 0.5) (seed 001's hinge features)."""

    def __init__(self):
        super().__init__(["b", "w1", "w2"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x[:, 0]
        return torch.stack([torch.ones_like(x0), torch.relu(x0), torch.relu(x0 - 0.5)], dim=-1)


def toy_mlp() -> nn.Sequential:
    """Seed 002's network: 3 -> 4 (ReLU) -> 2 (sigmoid)."""
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Sigmoid())


def _split(x: np.ndarray, y: np.ndarray, n_test: int, source: str) -> Dataset:
    return Dataset(
        x[n_test:],
        y[n_test:],
        x[:n_test],
        y[:n_test],
        tuple(f"x{i}" for i in range(x.shape[1])),
        tuple(f"y{i}" for i in range(y.shape[1])),
        source,
    )


def gistemp_like() -> Dataset:
    """143 yearly anomalies on x = (year - 1880) / 100, flat then rising (a stand-in for GISTEMP)."""
    rng = np.random.default_rng(1)
    x = np.arange(143.0)[:, None] / 100
    y = -0.25 + 0.1 * x + 1.2 * np.maximum(x - 0.9, 0) + 0.1 * rng.standard_normal((143, 1))
    return _split(x, y, 20, "gistemp-like")


def sine_rows() -> Dataset:
    """sin(x) on [-pi, pi] (seed 003)."""
    x, x_test = np.linspace(-np.pi, np.pi, 200)[:, None], np.linspace(-3, 3, 31)[:, None]
    return Dataset(x, np.sin(x), x_test, np.sin(x_test), ("x",), ("y",), "sine")


def toy_mlp_rows() -> Dataset:
    """20 points, 3 inputs, 2 targets in (0, 1), as seed 002 generates them."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((25, 3))
    y = 1 / (1 + np.exp(-np.stack([x[:, 0] - x[:, 1], x[:, 2] * x[:, 0]], axis=1)))
    return _split(x, y, 5, "toy-mlp")


def preset(name: str) -> Dataset:
    return load_dataset(make_config(Path("/tmp/unused"), f"experiment={name}")["data"])


@dataclass(frozen=True)
class Family:
    """A model family of the course seeds, with a chunk of runs that mixes lr and init."""

    model: dict[str, Any]
    loss: dict[str, Any]
    optim: dict[str, Any]
    data: Any  # () -> Dataset
    lrs: tuple[float, ...]  # the last one diverges
    inits: tuple[Optional[tuple[float, ...]], ...]
    engines: tuple[str, ...]
    linear: bool = True  # a FeatureModel: residual resampling applies


MSE, MAE = {"_target_": "torch.nn.MSELoss"}, {"_target_": "torch.nn.L1Loss"}
SGD = {"_target_": "torch.optim.SGD", "_partial_": True}
POLY = "pipeline.models.Polynomial"
NAN_START = (float("nan"),) + (0.1,) * 25  # a run that is diverged from its start

FAMILIES = {
    "000 tdm quadratic": Family(
        {"_target_": POLY, "degree": 2},
        MSE,
        SGD,
        lambda: preset("tdm_quadratic"),
        (3e-4, 0.03, 0.5),
        ((5.0, 4.0, 3.0), (0.0, 0.0, 0.0)),
        ("gram", "batched"),
    ),
    "004 linear": Family(
        {"_target_": POLY, "degree": 1},
        MSE,
        SGD,
        lambda: preset("linear_synthetic"),
        (0.1, 0.5, 3.0),
        ((0.194, 0.139), (1.0, -1.0)),
        ("gram", "batched"),
    ),
    "001 y = w x": Family(
        {"_target_": "tests.integration.test_batched.Slope"},
        MSE,
        SGD,
        gistemp_like,
        (0.1, 0.5, 6.0),
        ((0.0,), (2.0,)),
        ("gram", "batched"),
    ),
    # MAE's gradient is bounded, so SGD on it does not blow up: its diverged run starts so
    "001 y = w x + b, MAE": Family(
        {"_target_": POLY, "degree": 1},
        MAE,
        SGD,
        gistemp_like,
        (0.1, 0.3),
        ((0.0, 0.0), (1.0, 1.0), (float("nan"), 0.0)),
        ("batched",),
    ),
    "001 hinge": Family(
        {"_target_": "tests.integration.test_batched.Hinge"},
        MSE,
        SGD,
        gistemp_like,
        (0.1, 0.5, 8.0),
        ((0.0, 0.0, 0.0), (0.5, -0.5, 1.0)),
        ("gram", "batched"),
    ),
    "003 cubic, summed": Family(
        {"_target_": POLY, "degree": 3},
        {**MSE, "reduction": "sum"},
        SGD,
        sine_rows,
        (1e-6, 1e-5, 3e-4),
        ((0.0, 0.0, 0.0, 0.0), (0.1, 0.5, -0.2, 0.1)),
        ("gram", "batched"),
    ),
    "003 cubic, momentum": Family(
        {"_target_": POLY, "degree": 3},
        MSE,
        {**SGD, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
        sine_rows,
        (1e-3, 3e-3, 1.0),
        ((0.0, 0.0, 0.0, 0.0), (0.1, 0.5, -0.2, 0.1)),
        ("gram", "batched"),
    ),
    "002 mlp, adam": Family(
        {"_target_": "tests.integration.test_batched.toy_mlp"},
        MSE,
        {"_target_": "torch.optim.Adam", "_partial_": True},
        toy_mlp_rows,
        (1e-2, 3e-2),
        (None, None, NAN_START),
        ("batched",),
        linear=False,
    ),
    "002 mlp, sgd momentum": Family(
        {"_target_": "tests.integration.test_batched.toy_mlp"},
        MSE,
        {**SGD, "momentum": 0.9},
        toy_mlp_rows,
        (0.1, 0.5),
        (None, None, NAN_START),
        ("batched",),
        linear=False,
    ),
}


def family_problem(family: Family, dtype: str) -> Problem:
    cfg = {
        "model": family.model,
        "loss": family.loss,
        "optim": family.optim,
        "train": {"device": "cpu", "dtype": dtype},
    }
    problem = problem_from(cfg, family.data())
    problem.draw_settings = DRAW_SETTINGS  # what a sweep's SweepMeta gives the block and wild draws
    return problem


# blocks of 3 rows (a mean of 3 for the stationary bootstrap); Mammen's weights for the wild draws
DRAW_SETTINGS = {"block_length": 3, "wild_weights": MAMMEN}


def chunk_of(family: Family, resamples: int = 2) -> list[Run]:
    """Every lr x init x resample, and per lr a jackknife run (one row short) and, for
    models linear in their parameters, a residual-resampling draw; at the first lr a draw of
    each block scheme (and, linear models, a wild draw). Ids are labels only."""
    runs = []
    for lr in family.lrs:
        for i, init in enumerate(family.inits):
            for k in range(resamples):
                runs.append(Run(f"{lr}-{i}-{k}", lr, i, init, k, 7))
        runs.append(Run(f"{lr}-0-jackknife", lr, 0, family.inits[0], -3, 7))
        if family.linear:
            runs.append(Run(f"{lr}-0-residual", lr, 0, family.inits[0], 1, 7, RESIDUAL))
        if lr == family.lrs[0]:
            schemes = [*BLOCK_SCHEMES, *([WILD] if family.linear else [])]
            runs += [Run(f"{lr}-0-{scheme}", lr, 0, family.inits[0], 2, 7, scheme) for scheme in schemes]
    return runs


def train_cfg(**changes: Any) -> TrainSettings:
    return TrainSettings(**{"epochs": EPOCHS, "log_every": LOG_EVERY, "grad_tol": 1e-3, "engine": "auto", **changes})


def _close(actual: Any, expected: Any, what: str, **tol: float) -> None:
    torch.testing.assert_close(
        torch.tensor(actual, dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
        equal_nan=True,
        msg=lambda m: f"{what}: {m}",
        **tol,
    )


def assert_matches_reference(fast: list[RunResult], ref: list[RunResult], dtype: str, engine: str) -> None:
    tol = TOL[dtype]
    for f, r in zip(fast, ref, strict=True):
        label = f"run {r.run.run_id}"
        assert (f.run, f.status, f.epochs, f.curve_epoch) == (r.run, r.status, r.epochs, r.curve_epoch), label
        assert f.engine == engine and r.engine == "reference"
        scale = max((abs(v) for v in r.params if np.isfinite(v)), default=0.0)
        _close(f.params, r.params, f"{label} params", rtol=tol["rtol"], atol=max(tol["atol"], tol["rtol"] * scale))
        _close(f.final_loss, r.final_loss, f"{label} final loss", **tol)
        _close(f.curve_loss, r.curve_loss, f"{label} curve", **tol)
        _close(f.grad_norm, r.grad_norm, f"{label} grad norm", rtol=tol["rtol"], atol=GRAD_ATOL[dtype])
        if r.test_loss is not None:
            _close(f.test_loss, r.test_loss, f"{label} test loss", **tol)
        assert (f.ols is None) == (r.ols is None)
        if r.ols is not None:
            _close(f.ols, r.ols, f"{label} ols", rtol=1e-10, atol=1e-12)
            _close(f.ols_loss, r.ols_loss, f"{label} ols loss", rtol=1e-10, atol=1e-12)


CASES = [
    (name, engine, dtype)
    for name, fam in FAMILIES.items()
    for engine in fam.engines
    for dtype in ("float64", "float32")
]


@functools.lru_cache(maxsize=None)
def reference_chunk(name: str, dtype: str) -> tuple[Problem, list[Run], list[RunResult]]:
    """A family's problem and chunk, trained run by run by the reference loop (once per module)."""
    problem, runs = family_problem(FAMILIES[name], dtype), chunk_of(FAMILIES[name])
    return problem, runs, [train_reference(problem, run, train_cfg()) for run in runs]


@pytest.mark.parametrize("name,engine,dtype", CASES, ids=[" / ".join(c) for c in CASES])
def test_fast_engine_matches_reference_run_by_run(name, engine, dtype):
    problem, runs, ref = reference_chunk(name, dtype)
    diverged = [r.run for r in ref if r.status == DIVERGED]
    assert diverged and len(diverged) < len(runs), "each chunk must hold diverging and healthy runs"
    assert len({r.run.lr for r in ref if r.status != DIVERGED}) > 1
    assert {r.run.kind for r in ref} == {"original", "bootstrap", "jackknife"}
    assert_matches_reference(train_chunk(problem, runs, train_cfg(engine=engine)), ref, dtype, engine)


PRESET_ENGINES = {
    "tdm_quadratic": "gram",
    "linear_synthetic": "gram",
    "gistemp_slope": "gram",
    "gistemp_line": "gram",
    "gistemp_line_mae": "batched",
    "gistemp_hinge": "gram",
    "sine_cubic": "gram",
    "toy_mlp": "batched",
}


@pytest.mark.parametrize("preset", sorted(PRESET_ENGINES))
def test_every_preset_trains_with_auto_as_with_the_reference_loop(preset, tmp_path):
    cfg = make_config(
        tmp_path,
        f"experiment={preset}",
        "sweep=bootstrap",
        "sweep.resamples=2",
        "train.epochs=60",
        "train.log_every=20",
        "train.dtype=float64",
    )
    dataset = load_dataset(cfg["data"])
    problem, runs, settings = (
        problem_from(cfg, dataset),
        plan(cfg, dataset.digest()),
        TrainSettings.from_dict(cfg["train"]),
    )
    fast = train_chunk(problem, runs, settings)
    ref = train_chunk(problem, runs, replace(settings, engine="reference"))
    assert_matches_reference(fast, ref, "float64", PRESET_ENGINES[preset])


@pytest.mark.slow  # whole sweeps: the full suite's tier
@pytest.mark.parametrize("engine", ["gram", "batched"])
def test_a_run_gets_the_same_bits_in_any_chunk(engine):
    family = FAMILIES["000 tdm quadratic"]
    problem = family_problem(family, "float32")
    runs = chunk_of(family, resamples=4)
    cfg = train_cfg(engine=engine)
    whole = train_chunk(problem, runs, cfg)
    pieces = train_chunk(problem, runs[:5], cfg) + train_chunk(problem, runs[5:][::-1], cfg)[::-1]
    alone = [train_chunk(problem, [run], cfg)[0] for run in runs[:3]]
    for a, b in [*zip(whole, pieces, strict=True), *zip(whole[:3], alone)]:
        # to the bit: the Gram engine's per-run arithmetic, the batched engine's fixed-size blocks
        assert (a.run, a.status) == (b.run, b.status), a.run.run_id
        assert repr((a.params, a.final_loss, a.grad_norm, a.curve_loss, a.test_loss)) == repr(
            (b.params, b.final_loss, b.grad_norm, b.curve_loss, b.test_loss)
        ), a.run.run_id
    assert {r.status for r in whole} >= {"diverged", "not_converged"}


def test_logging_every_epoch_and_an_epoch_count_off_the_log_grid():
    """log_every = 1 (a check every epoch) and epochs not a multiple of log_every."""
    family = FAMILIES["003 cubic, momentum"]
    problem = family_problem(family, "float64")
    runs = chunk_of(family, resamples=1)
    for cfg in (train_cfg(epochs=37, log_every=1), train_cfg(epochs=97, log_every=25)):
        ref = [train_reference(problem, run, cfg) for run in runs]
        for engine in ("gram", "batched"):
            assert_matches_reference(train_chunk(problem, runs, replace(cfg, engine=engine)), ref, "float64", engine)


def test_row_sum_is_a_sum_in_a_chunk_independent_order():
    values = torch.randn(3, 2 * 2048 + 17, dtype=torch.float64)
    torch.testing.assert_close(row_sum(values), values.sum(dim=1), rtol=1e-12, atol=1e-12)
    assert all(torch.equal(row_sum(values)[i], row_sum(values[i : i + 1])[0]) for i in range(3))


def _parts(name: str):
    return family_problem(FAMILIES[name], "float32").parts


def test_auto_picks_the_fastest_engine_that_applies():
    assert engines.choose_engine(_parts("000 tdm quadratic"), "auto").name == "gram"
    assert engines.choose_engine(_parts("003 cubic, momentum"), "auto").name == "gram"
    mae = engines.choose_engine(_parts("001 y = w x + b, MAE"), "auto")
    assert mae.name == "batched" and "MSELoss" in mae.reason
    assert engines.choose_engine(_parts("002 mlp, adam"), "auto").name == "batched"
    assert engines.choose_engine(_parts("002 mlp, adam"), "reference").name == "reference"
    rmsprop = Family(
        FAMILIES["002 mlp, adam"].model,
        MSE,
        {"_target_": "torch.optim.RMSprop", "_partial_": True},
        toy_mlp_rows,
        (1e-2,),
        (None,),
        (),
    )
    fallback = engines.choose_engine(family_problem(rmsprop, "float32").parts, "auto")
    assert fallback.name == "reference" and "RMSprop" in fallback.reason
    with pytest.raises(ConfigError, match="train.engine"):
        engines.choose_engine(_parts("002 mlp, adam"), "gram")


def test_train_chunk_splits_a_chunk_that_does_not_fit_memory(monkeypatch, caplog):
    family = FAMILIES["000 tdm quadratic"]
    problem = family_problem(family, "float64")
    runs = chunk_of(family, resamples=3)
    whole = train_chunk(problem, runs, train_cfg())
    per_run = engines.FAST_ENGINES["gram"][1](problem)
    monkeypatch.setattr(memory, "available_memory", lambda device: (5 * per_run, "a test budget"))
    batches = []
    with caplog.at_level(logging.DEBUG, logger="pipeline"):  # the batch plan is logged at DEBUG
        split = train_chunk(problem, runs, train_cfg(), on_batch_done=batches.append)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 5, 3]  # the 3 jackknife runs apart
    assert (
        "a test budget fit 5 runs; 28 runs -> 6 batch(es) of up to 5 (runs of 2 data sizes, rows [999, 1000], apart)"
    ) in caplog.text
    assert [r.engine for r in split] == ["gram"] * len(runs)
    for a, b in zip(whole, split, strict=True):
        assert (a.run, a.params, a.curve_loss, a.status) == (b.run, b.params, b.curve_loss, b.status)


def test_batch_size_follows_the_memory_estimate(monkeypatch):
    """A batch takes a quarter of the RAM available, at the engine's estimate per run; the
    estimate grows with the rows a run holds and with the dtype's width."""
    monkeypatch.setattr(memory, "_available_ram", lambda: 8 * 2**30)
    problem = family_problem(FAMILIES["002 mlp, adam"], "float32")
    per_run = engines.FAST_ENGINES["batched"][1](problem)
    size, why = memory.batch_size(10**9, per_run, torch.device("cpu"))
    assert size == 2 * 2**30 // per_run
    assert why == f"about {per_run / 2**10:.1f} KiB per run; 25% of 8.0 GiB RAM available fit {size} runs"
    assert memory.batch_size(10, per_run, torch.device("cpu"))[0] == 10
    wide = family_problem(FAMILIES["002 mlp, adam"], "float64")
    assert engines.FAST_ENGINES["batched"][1](wide) == 2 * per_run
    doubled = replace(problem, x=torch.cat([problem.x, problem.x]), y=torch.cat([problem.y, problem.y]))
    assert per_run < engines.FAST_ENGINES["batched"][1](doubled) <= 2 * per_run


def test_validate_names_an_engine_that_cannot_train_the_experiment(tmp_path):
    cfg = make_config(tmp_path, "experiment=linear_synthetic", "train.engine=gram", "loss._target_=torch.nn.L1Loss")
    with pytest.raises(ConfigError, match=r"`train.engine` 'gram' cannot train this experiment: .*MSELoss"):
        validate(cfg)
    cfg = make_config(tmp_path, "experiment=linear_synthetic", "train.engine=turbo")
    with pytest.raises(ConfigError, match="`train.engine` must be one of reference, batched, gram, auto"):
        validate(cfg)


@pytest.mark.e2e
def test_a_sweep_records_its_engine_and_matches_the_reference_sweep(tmp_path):
    args = (
        "experiment=linear_synthetic",
        "sweep=bootstrap",
        "sweep.resamples=3",
        "sweep.lr=[0.1,3.0]",
        "launcher=debug",
        "launcher.runs_per_task=4",
    )
    _, ref = run_sweep(tmp_path / "ref", *args, "train.engine=reference")
    _, auto = run_sweep(tmp_path / "auto", *args)
    assert set(ref["engine"]) == {"reference"} and set(auto["engine"]) == {"gram"}
    assert set(auto["status"]) == {"ok", "diverged"}
    ref, auto = (frame.sort_values("run_id").reset_index(drop=True) for frame in (ref, auto))
    pd.testing.assert_frame_equal(ref[["run_id", "status", "epochs"]], auto[["run_id", "status", "epochs"]])
    healthy = ref["status"] != "diverged"
    cols = ["b", "w", "final_loss", "ols_b", "ols_w"]
    np.testing.assert_allclose(auto.loc[healthy, cols], ref.loc[healthy, cols], rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name,engine", [("000 tdm quadratic", "gram"), ("002 mlp, adam", "batched")])
def test_fast_engines_on_cuda_match_the_reference_on_cpu(name, engine):
    family = FAMILIES[name]
    cpu = family_problem(family, "float64")
    cuda = replace(
        cpu,
        x=cpu.x.cuda(),
        y=cpu.y.cuda(),
        device=torch.device("cuda"),
        x_test=None if cpu.x_test is None else cpu.x_test.cuda(),
        y_test=None if cpu.y_test is None else cpu.y_test.cuda(),
    )
    runs = chunk_of(family)
    ref = [train_reference(cpu, run, train_cfg()) for run in runs]
    fast = train_chunk(cuda, runs, train_cfg(engine=engine))
    assert {r.device for r in fast} == {"cuda"}
    for r in fast:
        r.device = "cpu"
    assert_matches_reference(fast, ref, "float64", engine)
