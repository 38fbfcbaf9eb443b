"""A grid cell's runs, split by kind and by whether their status is used, and the notes that
make its intervals impossible or qualify them (dropped draws, unconverged estimates, BCa's
jackknife, rows that look dependent). The intervals of parameters (`stats.intervals`) and of
predictions (`stats.prediction`) are built from these.

`why_no_interval` is the one rule for why a cell has no bootstrap interval, with advice
that fits its counts: the interval notes, the terminal's answer table and report.html all
call it (the readers with `CellRuns` counted from estimates.parquet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.core.runs import BLOCK_SCHEMES, BOOTSTRAP, CASE, DIVERGED, JACKKNIFE, NOT_CONVERGED, ORIGINAL
from pipeline.stats.draws import kinds_of
from pipeline.stats.ols import ClosedFormDesign

# A point estimate further than this share of a bootstrap SE from the closed-form optimum
# is called unconverged in the note: the interval then describes the optimiser. The same
# share flags a cell whose draws lie, in the median, this far from their own optima
# (`opt_to_sampling`): the optimisation error is then a visible part of the width.
GAP_SHARE_OF_SE = 0.1
NO_DRAWS = "no bootstrap draws: set sweep.resamples (e.g. sweep.resamples=1000)"


@dataclass(frozen=True)
class CellRuns:
    """How a grid cell's runs ended: all the rule for a missing interval reads."""

    counts: dict[str, int]  # every run of the cell (original, draws, jackknife fits) by status
    n_draws: int  # bootstrap draws
    n_usable: int  # of those, draws whose status is used
    original_status: Optional[str]  # None: no run on the original rows
    statuses: tuple[str, ...] = ("ok",)  # statuses used (`intervals.statuses`)
    lr_max_stable: float = np.nan  # SGD's stable bound on the original rows, where known

    @classmethod
    def of(cls, frame: pd.DataFrame, statuses: Sequence[str]) -> "CellRuns":
        """Counted from a cell's rows of estimates.parquet (`resample` or `kind`, `status`)."""
        kinds = kinds_of(frame)
        original, draws = frame[kinds == ORIGINAL], frame[kinds == BOOTSTRAP]
        bound = original["lr_max_stable"] if "lr_max_stable" in frame.columns else pd.Series(dtype=float)
        return cls(
            counts={str(k): int(v) for k, v in frame["status"].value_counts().items()},
            n_draws=len(draws),
            n_usable=int(draws["status"].isin(statuses).sum()),
            original_status=str(original["status"].iloc[0]) if len(original) else None,
            statuses=tuple(statuses),
            lr_max_stable=as_float(bound.iloc[0]) if len(bound) else np.nan,
        )

    @property
    def n_runs(self) -> int:
        return sum(self.counts.values())

    def unused(self, status: str) -> int:
        """Runs of the cell with `status`, when that status is not used (else 0)."""
        return 0 if status in self.statuses else self.counts.get(status, 0)


def _bound_text(runs: CellRuns) -> str:
    return f"lr_max_stable {runs.lr_max_stable:.3g}" if np.isfinite(runs.lr_max_stable) else ""


def _head(runs: CellRuns, status: str, did: str, every: str) -> str:
    """How many runs ended with `status`, said from the cell's point of view."""
    n = runs.unused(status)
    if n == runs.n_runs:
        return every
    if runs.original_status == status and 2 * n <= runs.n_runs:  # most runs are fine: the original is not
        return f"the fit on the original rows {did} ({n} of {runs.n_runs} runs did)"
    return f"{n} of {runs.n_runs} runs {did}"


def _diverged_advice(runs: CellRuns) -> str:
    bound = _bound_text(runs)
    head = _head(runs, DIVERGED, "diverged", "every run diverged")
    return f"{head}: lower lr" + (f" (below {bound} on the original rows)" if bound else "")


def _not_converged_advice(runs: CellRuns) -> str:
    bound = _bound_text(runs)
    larger = f"a larger lr below {bound}" if bound else "a larger lr"
    return f"{_head(runs, NOT_CONVERGED, 'did not converge', 'no run converged')}: raise train.epochs, or try {larger}"


def why_no_interval(runs: CellRuns) -> Optional[str]:
    """Why the cell's bootstrap gives no interval, with advice that fits its counts; None when
    it gives one (the fit on the original rows and at least two draws are usable).

    Mostly diverged: lower lr (naming SGD's stable bound when known); mostly not converged:
    more epochs or a larger lr below the bound; no draws at all: `sweep.resamples`; otherwise
    how many draws of how many are usable."""
    original_used = runs.original_status in runs.statuses
    if original_used and runs.n_usable >= 2:
        return None
    if original_used and runs.n_draws == 0:
        return NO_DRAWS
    diverged, not_converged = runs.unused(DIVERGED), runs.unused(NOT_CONVERGED)
    unusable_original = runs.original_status in (DIVERGED, NOT_CONVERGED) and not original_used
    if unusable_original and 2 * (diverged + not_converged) <= runs.n_runs:
        # most runs are usable, the one on the original rows is not: its status gives the advice
        return _diverged_advice(runs) if runs.original_status == DIVERGED else _not_converged_advice(runs)
    if diverged and diverged > not_converged:
        return _diverged_advice(runs)
    if not_converged:
        return _not_converged_advice(runs)
    if runs.original_status is None:
        return "no run on the original rows (resample 0) in this cell"
    used = ", ".join(runs.statuses)
    return f"too few usable draws: {runs.n_usable} of {runs.n_draws} (2 needed; statuses used: {used})"


@dataclass
class Cell:
    """One grid cell's runs, split by kind and by whether their status is used."""

    original: Optional[pd.Series]  # the run on the original rows
    boot: pd.DataFrame  # bootstrap draws whose status is used
    dropped: pd.Series  # statuses of the bootstrap draws left out
    jack: pd.DataFrame  # jackknife fits whose status is used
    jack_dropped: pd.Series
    scheme: str
    block_length: float = np.nan  # the draws' (mean) block length, for the block schemes

    @property
    def n_boot(self) -> int:
        return len(self.boot) + len(self.dropped)

    def runs(self, statuses: Sequence[str]) -> CellRuns:
        """The counts `why_no_interval` reads."""
        frames = [self.boot["status"], self.dropped, self.jack["status"], self.jack_dropped]
        if self.original is not None:
            frames.append(pd.Series([self.original["status"]]))
        counts = pd.concat(frames, ignore_index=True).value_counts()
        bound = self.original.get("lr_max_stable", np.nan) if self.original is not None else np.nan
        return CellRuns(
            counts={str(k): int(v) for k, v in counts.items()},
            n_draws=self.n_boot,
            n_usable=len(self.boot),
            original_status=None if self.original is None else str(self.original["status"]),
            statuses=tuple(statuses),
            lr_max_stable=as_float(bound),
        )


def grid_cells(frame: pd.DataFrame, by: Sequence[str]) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """({grid column: value}, the cell's rows) for each cell of the `by` columns, in order."""
    if not by:
        yield {}, frame
        return
    for key, cell in frame.groupby(list(by), sort=True, dropna=False):
        yield dict(zip(by, key if isinstance(key, tuple) else (key,))), cell


def split_cell(cell: pd.DataFrame, statuses: Sequence[str]) -> Cell:
    kinds = kinds_of(cell)
    used = cell["status"].isin(statuses)
    original = cell[kinds == ORIGINAL]
    boot_all = cell[kinds == BOOTSTRAP]
    schemes = boot_all["scheme"].dropna().unique() if "scheme" in cell.columns else []
    lengths = boot_all["block_length"].dropna().unique() if "block_length" in cell.columns else []
    return Cell(
        original=original.iloc[0] if len(original) else None,
        boot=boot_all[used[kinds == BOOTSTRAP]],
        dropped=boot_all.loc[~used[kinds == BOOTSTRAP], "status"],
        jack=cell[(kinds == JACKKNIFE) & used],
        jack_dropped=cell.loc[(kinds == JACKKNIFE) & ~used, "status"],
        scheme="/".join(sorted(schemes)) if len(schemes) else CASE,
        block_length=float(lengths[0]) if len(lengths) == 1 else np.nan,
    )


def counts_text(statuses: pd.Series) -> str:
    return "; ".join(f"{status}: {n}" for status, n in statuses.value_counts().sort_index().items())


def cell_notes(cell: Cell, statuses: Sequence[str], max_dropped_share: float) -> tuple[list[str], list[str]]:
    """(notes that make the cell's bootstrap intervals impossible, notes that qualify them);
    the first of the former is `why_no_interval`'s reason and advice."""
    fatal, caveats = [], []
    if cell.n_boot == 0:
        fatal.append(NO_DRAWS)
    elif len(cell.boot) < 2:
        fatal.append(
            f"{len(cell.boot)} usable resample(s) of {cell.n_boot} (statuses used: "
            f"{', '.join(statuses)}; dropped {counts_text(cell.dropped)})"
        )
    if cell.n_boot and len(cell.dropped) / cell.n_boot > max_dropped_share and len(cell.boot) >= 2:
        caveats.append(
            f"{len(cell.dropped)} of {cell.n_boot} draws dropped ({counts_text(cell.dropped)}), more than "
            f"max_dropped_share={max_dropped_share:g}: the draws kept may not be a random subset"
        )
    if fatal:
        fatal.insert(0, why_no_interval(cell.runs(statuses)) or "")
    unconverged = int((cell.boot["status"] != "ok").sum())
    if unconverged:
        caveats.append(
            f"{unconverged} of the draws used did not converge: the interval describes the optimiser "
            "as much as the data"
        )
    return fatal, caveats


def optimisation_share(draws: pd.DataFrame, name: str, se: float) -> float:
    """`opt_to_sampling`: the median over the draws used of |parameter - its closed-form value|
    (each draw's own optimum, `ols_<name>`), over the bootstrap standard error; NaN without a
    closed form or a standard error. Large: the optimiser, not the data, sets the width."""
    ols = f"ols_{name}"
    if ols not in draws.columns or not len(draws) or not (np.isfinite(se) and se > 0):
        return np.nan
    gaps = np.abs(draws[name].to_numpy(dtype=float) - draws[ols].to_numpy(dtype=float))
    return float(np.median(gaps) / se) if np.isfinite(gaps).all() else np.nan


def optimiser_sets_width(opt_to_sampling: float) -> bool:
    """Whether an interval row's `opt_to_sampling` is flagged (summary, report, note)."""
    return bool(np.isfinite(opt_to_sampling) and opt_to_sampling > GAP_SHARE_OF_SE)


def as_float(value: object) -> float:
    """A parameter value as a float; NaN for a missing one (None, NA) instead of a TypeError."""
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return float(number) if pd.notna(number) else np.nan


def estimate_notes(cell: Cell, name: str, statuses: Sequence[str], se: float) -> tuple[list[str], list[str], float]:
    """(fatal notes, caveats, gap to the closed-form optimum) for the point estimate of column
    `name`; the gap is known where the runs carry the optimum (`ols_<name>`), else NaN."""
    if cell.original is None:
        return ["no run on the original rows (resample 0) in this cell"], [], np.nan
    fatal, caveats = [], []
    status = cell.original["status"]
    if status not in statuses:
        fatal.append(f"the fit on the original rows is {status}")
    ols_col = f"ols_{name}"
    gap = (
        abs(as_float(cell.original[name]) - as_float(cell.original[ols_col]))
        if ols_col in cell.original.index
        else np.nan
    )
    if np.isfinite(gap) and (status != "ok" or (np.isfinite(se) and gap > GAP_SHARE_OF_SE * se)):
        share = f" = {gap / se:.2g} bootstrap SEs" if np.isfinite(se) and se > 0 else ""
        caveats.append(
            f"the fit on the original rows is {gap:.3g} away from the closed-form optimum{share}: an "
            "interval of unconverged fits describes the optimiser, not the data"
        )
    return fatal, caveats, gap


def bca_note(cell: Cell) -> tuple[bool, str]:
    """(whether bca can be formed, why not or how its acceleration was found)."""
    n_jack = len(cell.jack) + len(cell.jack_dropped)
    if n_jack == 0:
        return False, "bca needs jackknife fits (sweep.jackknife=true); none in this cell"
    if len(cell.jack) < 3:
        return False, (
            f"bca needs at least 3 usable jackknife fits; {len(cell.jack)} of {n_jack} "
            f"({counts_text(cell.jack_dropped)})"
        )
    if len(cell.jack_dropped):
        return True, f"acceleration from {len(cell.jack)} of {n_jack} jackknife fits ({counts_text(cell.jack_dropped)})"
    return True, ""


DEPENDENT = "rows look dependent"  # how the dependence note begins (the terminal answer finds it by this)


def dependence_note(residual_lag1: float, n_rows: int) -> str:
    """A note for the intervals that assume independent rows when the original fit's residuals
    (rows in their order) have a lag-1 autocorrelation above 2 / sqrt(n), the band white noise
    stays inside 95% of the time; '' otherwise."""
    band = 2 / np.sqrt(n_rows) if n_rows > 0 else np.inf
    if not np.isfinite(residual_lag1) or residual_lag1 <= band:
        return ""
    return (
        f"{DEPENDENT}: the original fit's residuals have lag-1 autocorrelation {residual_lag1:.2f} "
        f"(above 2/sqrt(n) = {band:.2f}, rows in their order: serially correlated errors, or a shape the model "
        "misses), and this interval assumes independent rows; "
        "a block scheme (sweep.scheme=moving_block, circular_block or stationary) or the hac interval allows for it"
    )


def note_dependence(rows: list[dict], scheme: str, design: Optional[ClosedFormDesign]) -> None:
    """Add the dependence note to the `note` of the rows (dicts with `method`) that assume
    independent rows, when the design's residuals look dependent."""
    if design is None or design.fit is None:
        return
    note = dependence_note(design.fit.residual_lag1, design.fit.df + len(design.fit.coef))
    for row in rows if note else ():
        if assumes_independence(row["method"], scheme):
            row["note"] = "; ".join(n for n in (row["note"], note) if n)


def assumes_independence(method: str, scheme: str) -> bool:
    """Whether an interval treats the rows as independent: every bootstrap method of a scheme
    that draws rows or residuals one at a time, and the t and hc3 closed forms (not hac)."""
    if method in ("t", "hc3"):
        return True
    return method != "hac" and scheme not in BLOCK_SCHEMES
