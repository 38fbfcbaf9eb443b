"""The figures of `report.html`, each a matplotlib Figure on the Agg canvas (no pyplot state).

Every function takes plain DataFrames read from the sweep folder and returns a Figure;
`to_png` turns it into PNG bytes for the page, and `pngs.py` saves the same figures beside
the tables. Neither torch nor Hydra is imported.
"""

from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

MAX_PANELS = 12  # cells (or learning rates) per figure; a larger grid shows its first ones and says so
METHOD_COLOURS = {
    "percentile": "tab:blue",
    "basic": "tab:orange",
    "bca": "tab:green",
    "normal": "tab:purple",
    "t": "tab:red",
    "hc3": "tab:brown",
    "hac": "tab:pink",
}
STATUS_COLOURS = {"ok": "tab:green", "not_converged": "tab:orange", "diverged": "tab:red"}
STATUS_MARKS = {"ok": "ok", "not_converged": "not conv.", "diverged": "diverged"}


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def cell_label(lr: float, init_index: int, sep: str = ", ") -> str:
    return f"lr {lr:g}{sep}init #{init_index}"


def init_label(index: int, init) -> str:
    if init is None or (np.ndim(init) == 0 and pd.isna(init)):
        return f"#{index} (model default)"
    return f"#{index}: [{', '.join(f'{float(v):g}' for v in np.ravel(init))}]"


def _panels(n: int, width: float, height: float, cols: int = 3) -> tuple[Figure, int, int]:
    cols = min(cols, max(1, n))
    rows = max(1, -(-n // cols))
    return Figure(figsize=(width * cols, height * rows), layout="constrained"), rows, cols


# --- lr x init map ------------------------------------------------------------------------------


def _text_colour(rgba: tuple) -> str:
    return "black" if 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5 else "white"


def grid_figure(original: pd.DataFrame) -> Figure:
    """Final loss of the original-rows fit per (lr, init), log colour scale, with its status."""
    lrs, inits = sorted(original["lr"].unique()), sorted(original["init_index"].unique())
    loss = np.full((len(inits), len(lrs)), np.nan)
    for row in original.itertuples():
        if np.isfinite(row.final_loss) and row.final_loss > 0:
            loss[inits.index(row.init_index), lrs.index(row.lr)] = row.final_loss
    finite = loss[np.isfinite(loss)]
    norm = LogNorm(finite.min(), max(finite.max(), finite.min() * 1.0001)) if len(finite) else None
    cmap = colormaps["viridis"].with_extremes(bad="0.25")
    fig = Figure(figsize=(min(1.3 * len(lrs) + 4.5, 12), 0.6 * len(inits) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(loss), cmap=cmap, norm=norm, aspect="auto")
    if len(finite) and finite.max() > finite.min() * 1.001:  # one value (or nearly) needs no colour bar
        bar = fig.colorbar(image, ax=ax, label="final loss (log scale)")
        for axis in (bar.ax.yaxis.set_major_formatter, bar.ax.yaxis.set_minor_formatter):
            axis(FuncFormatter(lambda value, _: f"{value:.4g}"))
        bar.ax.tick_params(which="both", labelsize=7)
    for row in original.itertuples():
        i, j = inits.index(row.init_index), lrs.index(row.lr)
        text = STATUS_MARKS.get(row.status, str(row.status))
        if np.isfinite(loss[i, j]):
            text += f"\n{row.final_loss:.3g}"
        colour = _text_colour(cmap(norm(loss[i, j])) if np.isfinite(loss[i, j]) else cmap.get_bad())
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs], fontsize=8)
    labels = original.drop_duplicates("init_index").set_index("init_index")["init"]
    ax.set_yticks(range(len(inits)), [init_label(i, labels.get(i)) for i in inits], fontsize=8)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("initial values")
    _mark_lr_bound(ax, original, lrs, inits)
    return fig


def lr_bound_position(bound: float, lrs: Sequence[float]) -> float | None:
    """Where `bound` falls on the map's lr axis (columns 0..n-1, log-interpolated between
    neighbours, half a column past the edge when outside the grid); None if not finite."""
    if not np.isfinite(bound) or bound <= 0 or not len(lrs):
        return None
    logs, target = np.log(np.asarray(lrs, dtype=float)), np.log(bound)
    if len(lrs) == 1 or target <= logs[0]:
        return -0.5 if target <= logs[0] else 0.5
    if target >= logs[-1]:
        return len(lrs) - 0.5
    return float(np.interp(target, logs, np.arange(len(lrs))))


def _mark_lr_bound(ax, original: pd.DataFrame, lrs: Sequence[float], inits: Sequence[int]) -> None:
    """A dashed red line per init row at lr_max_stable (2 / lambda_max, momentum included):
    gradient descent diverges to its right. Only models where the bound is known have it."""
    if "lr_max_stable" not in original:
        return
    drawn = []
    for i, init in enumerate(inits):
        bounds = original.loc[original["init_index"] == init, "lr_max_stable"].astype(float).dropna()
        x = lr_bound_position(float(bounds.median()), lrs) if len(bounds) else None
        if x is not None:
            label = None if drawn else f"lr_max_stable {float(bounds.median()):.3g}: diverges to the right"
            ax.plot([x, x], [i - 0.5, i + 0.5], color="red", linestyle="--", linewidth=1.5, label=label)
            drawn.append(x)
    if drawn:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)


# --- loss curves --------------------------------------------------------------------------------


def _band(cell: pd.DataFrame) -> pd.DataFrame:
    """Per epoch: runs with a finite positive loss, their median and 10% / 90% quantiles."""
    wide = cell.pivot_table(index="epoch", columns="run_id", values="loss", aggfunc="first", dropna=False)
    values = np.array(wide.to_numpy(dtype=float))  # a copy: the frame's own buffer may be read-only
    values[~np.isfinite(values) | (values <= 0)] = np.nan
    keep = np.isfinite(values).any(axis=1)
    values = values[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        q = np.nanquantile(values, [0.1, 0.5, 0.9], axis=1) if len(values) else np.empty((3, 0))
    return pd.DataFrame({"epoch": wide.index[keep], "q10": q[0], "median": q[1], "q90": q[2]})


def _stops(cell: pd.DataFrame) -> pd.Series:
    """How many diverged runs stopped at each logged epoch (the first with a non-finite loss)."""
    diverged = cell[cell["status"] == "diverged"]
    return diverged.groupby("run_id")["epoch"].max().value_counts().sort_index()


def _curve_panel(ax, frame: pd.DataFrame, lr: float) -> None:
    counts = frame.drop_duplicates("run_id")["status"].value_counts()
    for k, (init_index, cell) in enumerate(frame.groupby("init_index")):
        colour = f"C{k % 10}"
        band = _band(cell)
        ax.fill_between(band["epoch"], band["q10"], band["q90"], color=colour, alpha=0.25, lw=0)
        ax.plot(
            band["epoch"],
            band["median"],
            color=colour,
            lw=1.5,
            marker="." if len(band) < 3 else None,
            label=f"init #{init_index}: median, 10-90%",
        )
        stops = _stops(cell)
        if len(stops):  # at the top edge: their loss there is not finite
            top = 0.96 - 0.07 * (k % 8)  # one row per init, so their marks do not overlap
            ax.plot(
                stops.index,
                [top] * len(stops),
                "x",
                color=colour,
                ms=8,
                mew=2,
                clip_on=False,
                transform=ax.get_xaxis_transform(),
                label=f"init #{init_index}: diverged here (count)",
            )
            for epoch, n in stops.items():
                ax.annotate(
                    f"{n}",
                    (epoch, top),
                    xycoords=ax.get_xaxis_transform(),
                    xytext=(-6, 0),
                    textcoords="offset points",
                    ha="right",
                    va="center",
                    fontsize=7,
                    color=colour,
                )
    ax.set_yscale("log")
    ax.set_title(f"lr {lr:g}: " + ", ".join(f"{n} {s}" for s, n in counts.items()), fontsize=9)
    ax.set_xlabel("epoch", fontsize=8)
    ax.set_ylabel("training loss (log scale)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def curves_figure(curves: pd.DataFrame) -> Figure:
    """A panel per learning rate: each init's median loss over its runs, a 10-90% band, diverged marks.

    `curves`: run_id, epoch, loss, with each run's lr, init_index and status joined on.
    """
    lrs = sorted(curves["lr"].unique())
    shown = lrs[:MAX_PANELS]
    fig, rows, cols = _panels(len(shown), 4.6, 3.4)
    if len(shown) < len(lrs):
        fig.suptitle(f"first {len(shown)} of {len(lrs)} learning rates", fontsize=9)
    for i, lr in enumerate(shown):
        _curve_panel(fig.add_subplot(rows, cols, i + 1), curves[curves["lr"] == lr], lr)
    return fig


# --- bootstrap distributions --------------------------------------------------------------------


def _boot_panel(ax, values: np.ndarray, estimate: float, rows: pd.DataFrame) -> None:
    counts, _, _ = ax.hist(values, bins=min(40, max(5, len(values) // 5)), color="0.8", edgecolor="0.6")
    top = max(counts.max(), 1.0)
    if np.isfinite(estimate):
        ax.axvline(estimate, color="black", lw=1.2)
    rows = rows[rows["lower"].notna() & rows["upper"].notna()]
    for i, row in enumerate(rows.itertuples()):
        y, colour = -top * 0.12 * (i + 1), METHOD_COLOURS.get(row.method, "0.3")
        ax.plot([row.lower, row.upper], [y, y], color=colour, lw=2.5, solid_capstyle="butt")
        ax.plot([row.lower, row.upper], [y, y], "|", color=colour, ms=8)
        ax.annotate(
            str(row.method),
            (row.upper, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
            color=colour,
        )
    ax.set_ylim(-top * 0.12 * (len(rows) + 1), top * 1.05)
    left, right = ax.get_xlim()
    ax.set_xlim(left, right + 0.15 * (right - left))  # room for the method labels
    ax.set_yticks([])


def usable_draws(boot: pd.DataFrame, name: str, statuses: Sequence[str]) -> np.ndarray:
    values = boot.loc[boot["status"].isin(statuses), name].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def histogram_cells(estimates: pd.DataFrame, name: str, statuses: Sequence[str]) -> list:
    """The (lr, init_index) cells with at least two usable draws of `name`: those get a histogram.
    The others (every draw diverged, or none converged) would show only the closed-form bars on
    an axis stretched to the diverged estimate; the report says why they have none instead."""
    boot = estimates[estimates["kind"] == "bootstrap"]
    return [
        key
        for key, cell in boot.groupby(["lr", "init_index"], sort=True)
        if len(usable_draws(cell, name, statuses)) >= 2
    ]


def bootstrap_figure(estimates: pd.DataFrame, intervals: pd.DataFrame, name: str, statuses: Sequence[str]) -> Figure:
    """A panel per grid cell with usable bootstrap draws: their histogram, the estimate on the
    original rows, and every interval as a bar under it (report.html and the PNGs beside the tables)."""
    boot = estimates[estimates["kind"] == "bootstrap"]
    if "units" in intervals.columns and (intervals["units"] == "fitted").any():  # the histogram's units
        intervals = intervals[intervals["units"] == "fitted"]
    original = estimates[estimates["kind"] == "original"].drop_duplicates(["lr", "init_index"])
    original = original.set_index(["lr", "init_index"])[name]
    cells = histogram_cells(estimates, name, statuses)
    shown = cells[:MAX_PANELS]
    fig, rows, cols = _panels(len(shown), 4.2, 3.0)
    if len(shown) < len(cells):
        fig.suptitle(f"{name}: first {len(shown)} of {len(cells)} cells", fontsize=9)
    if not shown:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no cell has two usable bootstrap values", ha="center", va="center")
        ax.set_axis_off()
    for i, (lr, init_index) in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        cell = boot[(boot["lr"] == lr) & (boot["init_index"] == init_index)]
        values = usable_draws(cell, name, statuses)
        mine = pd.DataFrame(columns=["method", "lower", "upper"])  # no intervals.parquet: histograms only
        if len(intervals):
            mine = intervals[
                (intervals["lr"] == lr) & (intervals["init_index"] == init_index) & (intervals["parameter"] == name)
            ]
        _boot_panel(ax, values, float(original.get((lr, init_index), np.nan)), mine)
        dropped = f", {len(cell) - len(values)} dropped" if len(cell) > len(values) else ""
        ax.set_title(f"{cell_label(lr, init_index)}: {len(values)} usable draws{dropped}", fontsize=8)
        ax.set_xlabel(f"{name} (black line: estimate on the original rows)", fontsize=7)
        ax.tick_params(labelsize=7)
    return fig


# --- prediction bands ---------------------------------------------------------------------------


def band_method(rows: pd.DataFrame, order: Sequence[str]) -> str | None:
    """The method drawn as the filled band: the first of `order` with bounds at every point
    (then the first with any bounds), so that the band has no holes where another has none."""
    bounded = rows[rows["lower"].notna() & rows["upper"].notna()]
    methods = _ordered(bounded, order)
    n_points = rows["point"].nunique()
    complete = [m for m in methods if bounded.loc[bounded["method"] == m, "point"].nunique() == n_points]
    return (complete or methods or [None])[0]


def _ordered(rows: pd.DataFrame, order: Sequence[str]) -> list:
    return [m for m in order if m in set(rows["method"])] + sorted(set(rows["method"]) - set(order))


def _prediction_panels(top, bottom, rows: pd.DataFrame, x_name: str, order: Sequence[str]) -> list:
    """Top: the estimate over x and the band method's interval; bottom: every method's bounds
    minus that estimate, where intervals far narrower than the function's range can be told apart.
    Returns the methods with no bounds at any point (e.g. every bootstrap method of a diverged cell)."""
    rows = rows.sort_values(x_name)
    band = band_method(rows, order)
    methods = _ordered(rows, order)
    first = rows[rows["method"] == (band or methods[0])].drop_duplicates("point")
    centre = first.set_index("point")["estimate"]
    top.plot(
        first[x_name],
        first["estimate"],
        color="black",
        lw=1.5,
        marker="o",
        ms=3.5,
        zorder=3,
        label="estimate (original rows)",
    )
    bottom.axhline(0.0, color="black", lw=1.2)
    for method in methods:
        mine = rows[(rows["method"] == method) & rows["lower"].notna() & rows["upper"].notna()]
        if mine.empty:
            continue
        colour, shift = METHOD_COLOURS.get(method, "0.4"), mine["point"].map(centre).to_numpy(dtype=float)
        lower, upper = mine["lower"].to_numpy(dtype=float), mine["upper"].to_numpy(dtype=float)
        if method == band:
            top.fill_between(mine[x_name], lower, upper, color=colour, alpha=0.3, lw=0, label=f"{method} interval")
            bottom.fill_between(
                mine[x_name], lower - shift, upper - shift, color=colour, alpha=0.25, lw=0, label=method
            )
        else:
            bottom.plot(mine[x_name], lower - shift, color=colour, lw=1.2, ls="--", marker=".", ms=4, label=method)
            bottom.plot(mine[x_name], upper - shift, color=colour, lw=1.2, ls="--", marker=".", ms=4)
    if band is None:
        top.text(
            0.5,
            0.5,
            "no method has bounds here:\nsee the notes of the table",
            transform=top.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            color="0.3",
        )
    top.legend(fontsize=7, loc="best")
    if bottom.get_legend_handles_labels()[0]:
        bottom.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    bottom.set_xlabel(f"{x_name} (data units)", fontsize=8)
    bottom.set_ylabel("bounds - estimate", fontsize=7)
    for ax in (top, bottom):
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    bounded = set(rows.loc[rows["lower"].notna() & rows["upper"].notna(), "method"])
    return [m for m in methods if m not in bounded]


def prediction_figure(predictions: pd.DataFrame, x_name: str, order: Sequence[str] = tuple(METHOD_COLOURS)) -> Figure:
    """Per grid cell and output of a one-input model, two stacked panels: the estimate over x
    with the first bounded method of `order` as a band, and below every method's bounds
    minus the estimate (bands are often too thin to compare on the function's own scale).
    Cells beyond MAX_PANELS are left out and said."""
    panels = sorted(
        predictions.groupby(["lr", "init_index", "output"], sort=False).groups, key=lambda k: (k[0], k[1], str(k[2]))
    )
    shown = panels[:MAX_PANELS]
    cols = min(3, max(1, len(shown)))
    n_rows = max(1, -(-len(shown) // cols))
    fig = Figure(figsize=(5.2 * cols, 4.6 * n_rows), layout="constrained")
    grid = fig.add_gridspec(2 * n_rows, cols, height_ratios=[2, 1] * n_rows)
    if len(shown) < len(panels):
        fig.suptitle(f"first {len(shown)} of {len(panels)} cells", fontsize=9)
    level = predictions["level"].dropna() if "level" in predictions else pd.Series(dtype=float)
    for i, (lr, init_index, output) in enumerate(shown):
        r, c = divmod(i, cols)
        top = fig.add_subplot(grid[2 * r, c])
        bottom = fig.add_subplot(grid[2 * r + 1, c], sharex=top)
        mine = predictions[
            (predictions["lr"] == lr) & (predictions["init_index"] == init_index) & (predictions["output"] == output)
        ]
        unbounded = _prediction_panels(top, bottom, mine, x_name, order)
        title = cell_label(lr, init_index) + (f": {level.iloc[0]:.0%} intervals" if len(level) else "")
        top.set_title(title + (f"\nno bounds: {', '.join(unbounded)} (see the notes)" if unbounded else ""), fontsize=8)
        top.set_ylabel(f"{output} (fitted function)", fontsize=8)
        top.tick_params(labelbottom=False)
    return fig


# --- diagnostics --------------------------------------------------------------------------------


def _gap_panel(ax, estimates: pd.DataFrame, cells: list) -> None:
    rng = np.random.default_rng(0)  # fixed jitter: the same folder gives the same picture
    for i, (lr, init_index) in enumerate(cells):
        cell = estimates[(estimates["lr"] == lr) & (estimates["init_index"] == init_index)]
        cell = cell[np.isfinite(cell["gap_to_ols"])]
        for status, group in cell[cell["kind"] != "original"].groupby("status"):
            x = i + rng.uniform(-0.25, 0.25, len(group))
            ax.plot(
                x, group["gap_to_ols"].clip(lower=1e-16), ".", ms=3, alpha=0.6, color=STATUS_COLOURS.get(status, "0.4")
            )
        first = cell[cell["kind"] == "original"]
        ax.plot([i] * len(first), first["gap_to_ols"].clip(lower=1e-16), "D", color="black", ms=6)
    present = [s for s in STATUS_COLOURS if (estimates.loc[estimates["kind"] != "original", "status"] == s).any()]
    handles = [
        ax.plot([], [], "D", color="black", ms=5)[0],
        *[ax.plot([], [], "o", color=STATUS_COLOURS[s], ms=4)[0] for s in present],
    ]
    ax.legend(handles, ["original rows", *[f"resample: {s}" for s in present]], fontsize=7, loc="best")
    ax.set_yscale("log")
    ax.set_title("gap to the closed-form fit, per run", fontsize=9)
    ax.set_ylabel("gap_to_ols (largest |difference|, log scale)", fontsize=8)


def _dropped_panel(ax, estimates: pd.DataFrame, cells: list, statuses: Sequence[str]) -> None:
    boot = estimates[estimates["kind"] == "bootstrap"]
    bottom = np.zeros(len(cells))
    labels = [("used", None), *[(s, s) for s in sorted(set(boot["status"]) - set(statuses))]]
    for label, status in labels:
        counts = np.array(
            [
                (
                    (boot["lr"] == lr)
                    & (boot["init_index"] == ii)
                    & (boot["status"].isin(statuses) if status is None else boot["status"] == status)
                ).sum()
                for lr, ii in cells
            ],
            dtype=float,
        )
        colour = "tab:green" if status is None else STATUS_COLOURS.get(status, "0.5")
        ax.bar(
            range(len(cells)),
            counts,
            bottom=bottom,
            color=colour,
            label=label if status is None else f"dropped: {status}",
        )
        bottom += counts
    ax.set_title(f"bootstrap draws per cell (used: status in {', '.join(statuses)})", fontsize=9)
    ax.set_ylabel("draws", fontsize=8)
    ax.set_ylim(0, max(bottom.max(), 1) * 1.3)  # room for the legend above the bars
    ax.legend(fontsize=7, loc="upper center", ncols=3)


def diagnostics_figure(estimates: pd.DataFrame, statuses: Sequence[str], with_gap: bool, with_boot: bool) -> Figure:
    """Gap to the closed form per cell (when there is one) and the used / dropped draws per cell."""
    cells = sorted(estimates.groupby(["lr", "init_index"]).groups)[: MAX_PANELS * 2]
    panels = [p for p, wanted in (("gap", with_gap), ("dropped", with_boot)) if wanted]
    fig = Figure(figsize=(min(5.5, 1.5 + 0.8 * len(cells)) * len(panels) + 1, 3.6), layout="constrained")
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        if panel == "gap":
            _gap_panel(ax, estimates, cells)
        else:
            _dropped_panel(ax, estimates, cells, statuses)
        ax.set_xticks(range(len(cells)), [cell_label(lr, ii, "\n") for lr, ii in cells], fontsize=7)
        ax.set_xlim(-0.6, len(cells) - 0.4)
        ax.tick_params(axis="y", labelsize=7)
    return fig
