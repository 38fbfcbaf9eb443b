"""The Gram engine on runs that diverge far from a logged epoch: the textbook loop's
numbers, for O(log k) matrix products and a few epochs stepped one by one, not k.

The reference loop checks divergence at logged epochs only, so a run that overflows
early in a block of k epochs is found diverged at the block's end, with the parameters
stepping all k epochs gives (NaN by then). The blocks here are long (600 and 1,200
epochs) and the runs overflow within their first 400 (float64; float32 within 50); the
tests' time is the reference loop stepping through them. The problems and the
comparison are `tests/integration/test_batched.py`'s.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any, Callable

import pytest
import torch

from pipeline.core.runs import DIVERGED, RESIDUAL, Run, RunResult
from pipeline.train.engines import gram, moments, overflow, train_chunk, train_reference
from pipeline.train.problem import Problem
from tests.integration.test_batched import FAMILIES, Family, assert_matches_reference, family_problem, train_cfg

pytestmark = pytest.mark.engines  # benchmarks/gpu_check.sh runs these on CUDA too

EPOCHS = 1_200
FAMILY_NAMES = ("000 tdm quadratic", "004 linear", "003 cubic, momentum")  # momentum: Nesterov, weight decay
CASES = [
    (name, dtype, log_every) for name in FAMILY_NAMES for dtype in ("float32", "float64") for log_every in (600, 1_200)
]


def diverging_chunk(family: Family) -> list[Run]:
    """The family's diverging lr from both inits, on the original rows, a bootstrap draw and
    (linear models) a residual draw, and one run at a learning rate that converges."""
    lr, healthy = family.lrs[-1], family.lrs[1]
    runs = [Run(f"{lr}-0-0", lr, 0, family.inits[0], 0, 7), Run(f"{lr}-1-1", lr, 1, family.inits[1], 1, 7)]
    if family.linear:
        runs.append(Run(f"{lr}-0-residual", lr, 0, family.inits[0], 1, 7, RESIDUAL))
    return runs + [Run(f"{healthy}-0-0", healthy, 0, family.inits[0], 0, 7)]


def slowly_diverging_run(problem: Problem, family: Family, growth: float) -> Run:
    """A run on the original rows whose error grows by `growth` per epoch: lr puts the
    epoch's matrix I - lr H at eigenvalue -growth (H: the MSE gradient's matrix)."""
    features = problem.parts.make_model().features(problem.x.double())
    h_mat = 2 * features.T @ features / len(features)
    lr = (1 + growth) / float(torch.linalg.eigvalsh(h_mat).max())
    return Run(f"grows x{growth}", lr, 0, family.inits[0], 0, 7)


@functools.lru_cache(maxsize=None)
def reference(name: str, dtype: str, log_every: int) -> tuple[Problem, list[Run], list[RunResult]]:
    problem, runs = family_problem(FAMILIES[name], dtype), diverging_chunk(FAMILIES[name])
    return problem, runs, [train_reference(problem, run, train_cfg(epochs=EPOCHS, log_every=log_every)) for run in runs]


class Counter:
    """Wraps a function of `pipeline.engines.overflow` (the replay) and counts its calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str):
        self.calls, self.inner = 0, getattr(overflow, name)
        monkeypatch.setattr(overflow, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(*args, **kwargs)


def all_nan(result: RunResult) -> bool:
    return all(math.isnan(v) for v in result.params)


@pytest.mark.parametrize("name,dtype,log_every", CASES, ids=[f"{n} / {d} / every {k}" for n, d, k in CASES])
def test_runs_diverging_early_in_a_long_block_match_the_reference(name, dtype, log_every):
    problem, runs, ref = reference(name, dtype, log_every)
    diverged = [r for r in ref if r.status == DIVERGED]
    assert len(diverged) == len(runs) - 1 and ref[-1].status != DIVERGED
    logged = [0, log_every] if log_every < EPOCHS else [0]  # found at the first logged epoch after 0
    assert all(r.epochs == log_every and r.curve_epoch == logged and all_nan(r) for r in diverged)
    assert_matches_reference(
        train_chunk(problem, runs, train_cfg(epochs=EPOCHS, log_every=log_every, engine="gram")), ref, dtype, "gram"
    )


@pytest.mark.parametrize("dtype,growth,window", [("float32", 1.05, 300), ("float64", 1.3, 80)])
def test_a_slowly_diverging_run_matches_the_reference_and_steps_a_short_window(dtype, growth, window, monkeypatch):
    """Growth 1.05 per epoch overflows float32 near epoch 1,800, 1.3 float64 near 2,700;
    the stepped window is the epochs it takes to grow through the headroom,
    log(2^10 x step gain) / log(growth): 175 and 36 epochs, measured."""
    family = FAMILIES["004 linear"]
    problem = family_problem(family, dtype)
    runs = [slowly_diverging_run(problem, family, growth)]
    cfg = train_cfg(epochs=4_000, log_every=4_000)
    ref = [train_reference(problem, run, cfg) for run in runs]
    assert ref[0].status == DIVERGED and all_nan(ref[0])
    steps = Counter(monkeypatch, "sgd_update")
    assert_matches_reference(gram.train_gram(problem, runs, replace(cfg, engine="gram")), ref, dtype, "gram")
    assert steps.calls <= window  # replay steps only (the epoch matrices are built in engines/moments.py)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_million_epochs_logged_once_take_log_many_products_and_a_few_steps(dtype, monkeypatch):
    family = FAMILIES["000 tdm quadratic"]
    problem, runs = family_problem(family, dtype), diverging_chunk(family)
    steps, squares = Counter(monkeypatch, "sgd_update"), Counter(monkeypatch, "_squared")
    results = gram.train_gram(problem, runs, train_cfg(epochs=10**6, log_every=10**6))
    *diverged, healthy = results
    assert all(r.status == DIVERGED and r.epochs == 10**6 and r.curve_epoch == [0] and all_nan(r) for r in diverged)
    assert healthy.status != DIVERGED and healthy.curve_epoch == [0, 10**6]
    assert squares.calls <= (10**6).bit_length()  # M^2, M^4, ..., M^(2^19)
    assert steps.calls <= 16  # measured 6 (float32) and 7 (float64): the overflow, then NaN 1-2 epochs on


def spy_on_lifting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], tuple[torch.Tensor, ...]]]:
    calls = []
    inner: Callable[..., tuple[torch.Tensor, torch.Tensor]] = overflow.last_trusted_epochs

    def spy(*args: Any) -> tuple[torch.Tensor, torch.Tensor]:
        out = inner(*args)
        calls.append((args, out))
        return out

    monkeypatch.setattr(overflow, "last_trusted_epochs", spy)
    return calls


@pytest.mark.parametrize("name", ["000 tdm quadratic", "003 cubic, momentum"])
def test_the_lifting_finds_the_last_trusted_epoch_that_stepping_finds(name, monkeypatch):
    family = FAMILIES[name]
    problem, runs = family_problem(family, "float64"), diverging_chunk(family)[:2]
    calls = spy_on_lifting(monkeypatch)
    gram.train_gram(problem, runs, train_cfg(epochs=10**6, log_every=10**6))
    assert len(calls) == 1
    (z, start, end, first, later, bound), (at, lifted) = calls[0]
    assert start == 0
    for run in range(len(z)):
        rows = torch.tensor([run])
        state, epoch = moments.matrix_times(first[rows], z[rows]), 1  # the first epoch has its own matrix
        while bool(bound.rows(rows).trusted(moments.matrix_times(later[rows], state))):
            state, epoch = moments.matrix_times(later[rows], state), epoch + 1
        assert int(at[run]) == epoch
        torch.testing.assert_close(lifted[run], state[0], rtol=0, atol=1e-10 * float(state.abs().max()))


def test_stopping_the_replay_once_settled_changes_nothing(monkeypatch):
    """The replay stops a run once its parameters are all NaN (or a step maps its state to
    itself); stepping it to the block's end instead gives the same bits."""
    family = FAMILIES["003 cubic, momentum"]
    problem, runs = family_problem(family, "float32"), diverging_chunk(family)
    cfg = train_cfg(epochs=EPOCHS, log_every=EPOCHS)
    early = gram.train_gram(problem, runs, cfg)
    steps = Counter(monkeypatch, "sgd_update")
    monkeypatch.setattr(overflow, "_settled", lambda theta, *_: torch.zeros(len(theta), dtype=torch.bool))
    full = gram.train_gram(problem, runs, cfg)
    assert steps.calls > EPOCHS - 100  # it did step the whole block
    for a, b in zip(early, full, strict=True):
        assert (a.status, a.epochs, a.curve_epoch, str(a.params), str(a.curve_loss)) == (
            b.status,
            b.epochs,
            b.curve_epoch,
            str(b.params),
            str(b.curve_loss),
        )
