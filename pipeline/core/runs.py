"""The records that cross module lines, as frozen dataclasses. Imports nothing of ours.

A `Run` is planned (`plan`), trained (`engines`) into a `RunResult`, and written
(`record`); a `Task` is a chunk of runs one (array) task trains from its `TaskSpec`;
`SweepMeta` is what a sweep folder says about itself (`sweep.json`); `TrainSettings`
is the `train` config section as the loops read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Union, overload

import numpy as np

OK, NOT_CONVERGED, DIVERGED = "ok", "not_converged", "diverged"  # a run's status


STATUSES = (OK, NOT_CONVERGED, DIVERGED)


CASE, RESIDUAL = "case", "residual"  # resampling schemes of the bootstrap draws (core.resampling.SCHEMES)
# block bootstraps: rows in their order, taken in blocks (fixed length; wrapping; geometric lengths)
MOVING_BLOCK, CIRCULAR_BLOCK, STATIONARY = "moving_block", "circular_block", "stationary"
WILD = "wild"  # every x, y* = fitted + residual * v, v drawn per row (Rademacher or Mammen)


BLOCK_SCHEMES = (MOVING_BLOCK, CIRCULAR_BLOCK, STATIONARY)
SCHEMES = (CASE, RESIDUAL, *BLOCK_SCHEMES, WILD)
RADEMACHER, MAMMEN = "rademacher", "mammen"  # the wild bootstrap's weights
WILD_WEIGHTS = (RADEMACHER, MAMMEN)


ORIGINAL, BOOTSTRAP, JACKKNIFE = "original", "bootstrap", "jackknife"  # kinds of resample


# a run's learning-rate bounds (SGD on a least-squares fit: stats.lr_bound), stored with it
STABILITY_COLUMNS = ("lr_max_stable", "lr_fastest", "rate", "epochs_to_tol")


def resample_kind(resample: int) -> str:
    """0: the original rows; k >= 1: bootstrap draw k; -(j+1): the jackknife fit without row j."""
    return ORIGINAL if resample == 0 else (BOOTSTRAP if resample > 0 else JACKKNIFE)


@dataclass(frozen=True)
class Run:
    """One training run: a grid point on one resample."""

    run_id: str
    lr: float
    init_index: int
    init: Optional[tuple[float, ...]]  # None: the model's own initialisation
    resample: int  # 0: the original rows; k >= 1: bootstrap draw k; -(j+1): jackknife, row j left out
    seed: int
    scheme: str = CASE  # the sweep's resampling scheme; it changes the numbers of bootstrap draws only

    @property
    def kind(self) -> str:
        return resample_kind(self.resample)

    def as_row(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict: its deep copy cost ~0.3 ms a run (minutes for 10^6 runs)
        return {
            "run_id": self.run_id,
            "lr": self.lr,
            "init_index": self.init_index,
            "init": None if self.init is None else list(self.init),
            "resample": self.resample,
            "seed": self.seed,
            "scheme": self.scheme,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class Task:
    """What one (array) task trains: a chunk of runs, in plan order."""

    index: int
    runs: tuple[Run, ...]

    @property
    def part_name(self) -> str:
        """File stem of the task's Parquet part: fixed by its runs, so a rerun replaces it."""
        digest = hashlib.sha1("".join(r.run_id for r in self.runs).encode()).hexdigest()[:12]
        return f"part-{self.index:05d}-{digest}"


@dataclass
class RunResult:
    """A finished run, whatever its status: crosses from the engines to `record`."""

    run: Run
    params: list[float]
    final_loss: float
    test_loss: Optional[float]
    grad_norm: float
    epochs: int
    status: str
    curve_epoch: list[int] = field(default_factory=list)
    curve_loss: list[float] = field(default_factory=list)
    ols: Optional[list[float]] = None  # closed-form fit on the same rows, if linear
    ols_loss: Optional[float] = None
    wall_time: float = 0.0
    device: str = "cpu"
    engine: str = "reference"
    status_note: str = ""  # why the run is not ok, with the numbers (`engines.divergence.run_statuses`)
    stability: Optional[list[float]] = None  # lr_max_stable, lr_fastest, rate, epochs_to_tol (SGD on least squares)


@dataclass(eq=False)
class RunBatch(Sequence):  # type: ignore[type-arg]
    """The results of a batch of runs trained together, as columns (numpy arrays, row i =
    run i): what the fast engines hand back, written as a part without one Python object
    per run (`record.batch_table`). As a sequence it reads as the RunResults of its runs,
    built when first asked for (`results`), for code that walks runs one by one.

    Loss curves are flat: run i's logged epochs and losses are
    `curve_epoch[curve_offsets[i]:curve_offsets[i + 1]]` (and `curve_loss` alike).
    """

    runs: tuple[Run, ...]
    params: np.ndarray  # (runs, n_params) float64
    final_loss: np.ndarray  # (runs,) float64
    test_loss: Optional[np.ndarray]  # (runs,) float64, or None without test rows
    grad_norm: np.ndarray  # (runs,) float64
    epochs: np.ndarray  # (runs,) int64
    status: np.ndarray  # (runs,) str (object)
    curve_offsets: np.ndarray  # (runs + 1,) int64
    curve_epoch: np.ndarray  # int64, flat
    curve_loss: np.ndarray  # float64, flat
    ols: Optional[np.ndarray] = None  # (runs, n_params) float64, where there is a closed form
    ols_loss: Optional[np.ndarray] = None
    wall_time: float = 0.0  # per run
    device: str = "cpu"
    engine: str = "reference"
    status_note: Optional[np.ndarray] = None  # (runs,) str (object): why a run is not ok; None: ""
    stability: Optional[np.ndarray] = None  # (runs, 4) learning-rate bounds (`RunResult.stability`)

    def __post_init__(self) -> None:
        self._results: Optional[list[RunResult]] = None

    def __len__(self) -> int:
        return len(self.runs)

    @overload
    def __getitem__(self, i: int) -> RunResult: ...

    @overload
    def __getitem__(self, i: slice) -> list[RunResult]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[RunResult, list[RunResult]]:
        return self.results()[i]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.results())

    def results(self) -> list[RunResult]:
        """One RunResult per run (built once, on first use)."""
        if self._results is None:
            self._results = [self._result(i) for i in range(len(self.runs))]
        return self._results

    def _result(self, i: int) -> RunResult:
        a, b = int(self.curve_offsets[i]), int(self.curve_offsets[i + 1])
        result = RunResult(
            self.runs[i],
            self.params[i].tolist(),
            float(self.final_loss[i]),
            None if self.test_loss is None else float(self.test_loss[i]),
            float(self.grad_norm[i]),
            int(self.epochs[i]),
            str(self.status[i]),
            self.curve_epoch[a:b].tolist(),
            self.curve_loss[a:b].tolist(),
            wall_time=self.wall_time,
            device=self.device,
            engine=self.engine,
            status_note="" if self.status_note is None else str(self.status_note[i]),
        )
        if self.ols is not None and self.ols_loss is not None:
            result.ols, result.ols_loss = self.ols[i].tolist(), float(self.ols_loss[i])
        if self.stability is not None:
            result.stability = self.stability[i].tolist()
        return result
