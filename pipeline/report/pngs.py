"""PNG figures written beside a sweep's tables: report.html's own figures (`figures.py`), titled.

- `bootstrap_<parameter>.png`: per grid cell with usable draws, the histogram of the
  parameter's bootstrap values, the estimate on the original rows, and every method's
  interval drawn as a bar under the histogram;
- `grid_final_loss.png` (grids with more than one lr or init): the final loss of the fit on
  the original rows per (lr, init), coloured on a log scale, with its status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline import store
from pipeline.core.runs import BOOTSTRAP, ORIGINAL
from pipeline.report.figures import bootstrap_figure, grid_figure
from pipeline.stats.draws import kinds_of


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def plot_bootstrap(
    estimates: pd.DataFrame, intervals: pd.DataFrame, name: str, statuses: Sequence[str], path: Path
) -> Path:
    """One figure for one parameter: a panel per grid cell with usable bootstrap values."""
    fig = bootstrap_figure(estimates.assign(kind=kinds_of(estimates)), intervals, name, statuses)
    level = intervals["level"].iloc[0] if len(intervals) and "level" in intervals else 0.95
    title = f"{name}: bootstrap distribution and {level:.0%} intervals"
    fig.suptitle(title + (f" ({fig.get_suptitle()})" if fig.get_suptitle() else ""), fontsize=10)
    return _save(fig, path)


def plot_grid(estimates: pd.DataFrame, path: Path) -> Path:
    """Heat map of the final loss of the original-rows fit over lr x init, with statuses."""
    fig = grid_figure(estimates[kinds_of(estimates) == ORIGINAL])
    fig.axes[0].set_title(
        "final loss of the fit on the original rows, and its status (dark grey: no finite loss)", fontsize=9
    )
    return _save(fig, path)


def write_plots(
    out_dir: Path,
    estimates: pd.DataFrame,
    intervals: pd.DataFrame,
    params: Sequence[str],
    statuses: Sequence[str] = ("ok",),
) -> list[Path]:
    """Every figure that applies to this sweep, as PNGs in `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    paths = []
    if (kinds_of(estimates) == BOOTSTRAP).any():
        paths += [
            plot_bootstrap(estimates, intervals, name, statuses, out_dir / store.bootstrap_png(name)) for name in params
        ]
    if estimates["lr"].nunique() > 1 or estimates["init_index"].nunique() > 1:
        paths.append(plot_grid(estimates, out_dir / store.GRID_PNG))
    return paths
