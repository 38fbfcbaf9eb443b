"""A grid cell's runs, split by kind and by whether their status is used, and the notes that
make its intervals impossible or qualify them (dropped draws, unconverged estimates, BCa's
jackknife, rows that look dependent). The intervals of parameters (`stats.intervals`) and of
predictions (`stats.prediction`) are built from these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline.core.runs import BLOCK_SCHEMES, BOOTSTRAP, CASE, JACKKNIFE, ORIGINAL
from pipeline.stats.draws import kinds_of
from pipeline.stats.ols import ClosedFormDesign

# A point estimate further than this share of a bootstrap SE from the closed-form optimum
# is called unconverged in the note: the interval then describes the optimiser.
GAP_SHARE_OF_SE = 0.1


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
    """(notes that make the cell's bootstrap intervals impossible, notes that qualify them)."""
    fatal, caveats = [], []
    if cell.n_boot == 0:
        fatal.append("no bootstrap resamples in this cell (sweep.resamples=0)")
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
    unconverged = int((cell.boot["status"] != "ok").sum())
    if unconverged:
        caveats.append(
            f"{unconverged} of the draws used did not converge: the interval describes the optimiser "
            "as much as the data"
        )
    return fatal, caveats


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
            f"the point estimate is {gap:.3g} from the closed-form optimum{share}: an interval of "
            "unconverged fits describes the optimiser, not the data"
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


def dependence_note(residual_lag1: float, n_rows: int) -> str:
    """A note for the intervals that assume independent rows when the original fit's residuals
    (rows in their order) have a lag-1 autocorrelation above 2 / sqrt(n), the band white noise
    stays inside 95% of the time; '' otherwise."""
    band = 2 / np.sqrt(n_rows) if n_rows > 0 else np.inf
    if not np.isfinite(residual_lag1) or residual_lag1 <= band:
        return ""
    return (
        f"rows look dependent: the original fit's residuals have lag-1 autocorrelation {residual_lag1:.2f} "
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
