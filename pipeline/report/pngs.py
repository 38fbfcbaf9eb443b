"""PNG figures written beside a sweep's tables (matplotlib's Agg canvas, no pyplot state).

- `bootstrap_<parameter>.png`: per grid cell, the histogram of the parameter's usable
  bootstrap values, the estimate on the original rows, and every method's interval
  drawn as a bar under the histogram;
- `grid_final_loss.png` (grids with more than one lr or init; drawn by the report's
  `grid_figure`): the final loss of the fit on the original rows per (lr, init), coloured
  on a log scale, with its status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.core.runs import BOOTSTRAP, ORIGINAL
from pipeline.report.figures import METHOD_COLOURS, grid_figure
from pipeline.stats.draws import kinds_of

MAX_PANELS = 12  # cells per parameter figure; a larger grid shows its first cells and says so


def _cell_label(lr: float, init_index: int) -> str:
    return f"lr {lr:g}, init #{init_index}"


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def _draw_cell(ax, values: np.ndarray, estimate: float, rows: pd.DataFrame) -> None:
    counts, _, _ = ax.hist(values, bins=min(40, max(5, len(values) // 5)), color="0.8", edgecolor="0.6")
    top = max(counts.max(), 1.0)
    ax.axvline(estimate, color="black", lw=1.2)
    rows = rows[rows["lower"].notna()]
    for i, row in enumerate(rows.itertuples()):
        y = -top * 0.1 * (i + 1)
        colour = METHOD_COLOURS.get(row.method, "0.3")
        ax.plot([row.lower, row.upper], [y, y], color=colour, lw=2.5, solid_capstyle="butt")
        ax.plot([row.lower, row.upper], [y, y], "|", color=colour, ms=8)
        ax.annotate(
            row.method, (row.upper, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7, color=colour
        )
    ax.set_ylim(-top * 0.1 * (len(rows) + 1), top * 1.05)
    left, right = ax.get_xlim()
    ax.set_xlim(left, right + 0.12 * (right - left))  # room for the method labels
    ax.set_yticks([])


def plot_bootstrap(
    estimates: pd.DataFrame, intervals: pd.DataFrame, name: str, statuses: Sequence[str], path: Path
) -> Path:
    """One figure for one parameter: a panel per grid cell with usable bootstrap values."""
    kinds = kinds_of(estimates)
    if "units" in intervals.columns and (intervals["units"] == "fitted").any():  # the histogram's units
        intervals = intervals[intervals["units"] == "fitted"]
    boot = estimates[(kinds == BOOTSTRAP) & estimates["status"].isin(statuses)]
    original = estimates[kinds == ORIGINAL].set_index(["lr", "init_index"])
    cells = [key for key, frame in boot.groupby(["lr", "init_index"]) if len(frame) >= 2]
    shown = cells[:MAX_PANELS]
    cols = min(3, max(1, len(shown)))
    rows_n = max(1, -(-len(shown) // cols))
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows_n), layout="constrained")
    title = f"{name}: bootstrap distribution and {intervals['level'].iloc[0]:.0%} intervals"
    if len(cells) > len(shown):
        title += f" (first {len(shown)} of {len(cells)} cells)"
    fig.suptitle(title, fontsize=10)
    if not shown:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no cell has two usable bootstrap values", ha="center", va="center")
        ax.set_axis_off()
    for i, (lr, init_index) in enumerate(shown):
        ax = fig.add_subplot(rows_n, cols, i + 1)
        values = boot.loc[(boot["lr"] == lr) & (boot["init_index"] == init_index), name].to_numpy(dtype=float)
        estimate = float(original.loc[(lr, init_index), name]) if (lr, init_index) in original.index else np.nan
        cell_rows = intervals[
            (intervals["lr"] == lr) & (intervals["init_index"] == init_index) & (intervals["parameter"] == name)
        ]
        _draw_cell(ax, values, estimate, cell_rows)
        n_all = int(((kinds == BOOTSTRAP) & (estimates["lr"] == lr) & (estimates["init_index"] == init_index)).sum())
        dropped = f" ({n_all - len(values)} dropped)" if n_all > len(values) else ""
        ax.set_title(f"{_cell_label(lr, init_index)}: {len(values)} usable draws{dropped}", fontsize=8)
        ax.set_xlabel(f"{name} (black line: estimate on the original rows)", fontsize=7)
        ax.tick_params(labelsize=7)
    return _save(fig, path)


def plot_grid(estimates: pd.DataFrame, path: Path) -> Path:
    """Heat map of the final loss of the original-rows fit over lr x init, with statuses
    (the report's figure, `report_figures.grid_figure`, with a title)."""
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
            plot_bootstrap(estimates, intervals, name, statuses, out_dir / f"bootstrap_{name}.png") for name in params
        ]
    if estimates["lr"].nunique() > 1 or estimates["init_index"].nunique() > 1:
        paths.append(plot_grid(estimates, out_dir / "grid_final_loss.png"))
    return paths
