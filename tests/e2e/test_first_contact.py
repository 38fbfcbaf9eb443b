"""First contact: `pipeline-sweep` with the defaults shows the answer, and `sweep=lr_grid`
reaches every status on every course preset.

The default sweep (`sweep=story`) is tdm_quadratic at four learning rates with a bootstrap
at each; the end-to-end test runs it through the real console entry point, as a user
would on a fresh clone, and reads back what it printed and wrote.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from pipeline.config.schema import to_container
from pipeline.config.shipped import CONF_DIR
from pipeline.report.summary import sweep_summary
from tests.conftest import run_cli, run_sweep

ALL_STATUSES = {"ok", "not_converged", "diverged"}
# What sweep=lr_grid reaches per preset. L1's gradient is bounded, so gistemp_line_mae has
# no ok run (the gradient never vanishes) and diverges only where float32 overflows.
LR_GRID_STATUSES = {
    "tdm_quadratic": ALL_STATUSES,
    "gistemp_slope": ALL_STATUSES,
    "gistemp_line": ALL_STATUSES,
    "gistemp_line_mae": {"not_converged", "diverged"},
    "gistemp_hinge": ALL_STATUSES,
    "toy_mlp": ALL_STATUSES,
    "sine_cubic": ALL_STATUSES,
    "linear_synthetic": ALL_STATUSES,
}


def default_config(*overrides: str) -> dict:
    """The real default config (tests/conftest.py's make_config pins sweep=bootstrap)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_container(compose("config", overrides=[*overrides, "out_dir=/tmp/unused"]))


def test_every_course_preset_has_its_lr_grid_expectation():
    presets = {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")} - {"user_data"}
    assert presets == set(LR_GRID_STATUSES)


def test_default_sweep_is_the_story_around_the_seed():
    cfg = default_config()
    assert cfg["experiment"] == "tdm_quadratic" and cfg["sweep"]["name"] == "story"
    assert cfg["optim"]["lr"] == 3e-4 and cfg["train"]["epochs"] == 10_000  # the seed's settings ...
    assert cfg["init"] == [5.0, 4.0, 3.0]
    assert 3e-4 in cfg["sweep"]["lr"]  # ... are one cell of the grid
    assert cfg["sweep"]["resamples"] >= 30
    assert len(cfg["sweep"]["lr"]) * (cfg["sweep"]["resamples"] + 1) <= cfg["launcher"]["runs_per_task"]


def test_story_grid_straddles_the_stable_bound_of_the_data():
    """Full-batch GD on MSE is stable for lr < 2 / lambda_max(2/n X^T X): the top rate is above it."""
    cfg = default_config()
    x = pd.read_csv(Path(cfg["data"]["path"]))["x"].to_numpy()
    X = np.column_stack([np.ones_like(x), x, x**2])
    bound = 2 / np.linalg.eigvalsh(2 / len(x) * X.T @ X).max()
    lrs = sorted(cfg["sweep"]["lr"])
    assert lrs[-2] < bound < lrs[-1]


@pytest.mark.e2e
def test_default_pipeline_sweep_shows_statuses_intervals_summary_and_report(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    est = pd.read_parquet(out / "estimates.parquet")
    assert set(est["status"]) == ALL_STATUSES
    ci = pd.read_parquet(out / "intervals.parquet")
    params = ["beta0", "beta1", "beta2"]
    finite = ci[
        ci["method"].isin(["percentile", "t"]) & ci["lower"].notna() & ci["upper"].notna() & (ci["lower"] < ci["upper"])
    ]
    wanted = {(p, m) for p in params for m in ("percentile", "t")}
    full_cells = [lr for lr, rows in finite.groupby("lr") if wanted <= set(zip(rows["parameter"], rows["method"]))]
    assert full_cells, ci[["lr", "parameter", "method", "lower", "upper", "note"]]
    assert (out / "report.html").is_file() and f"report: {out / 'report.html'}" in proc.stdout

    summary = proc.stdout[proc.stdout.index("sweep folder:") :].splitlines()
    assert len(summary) <= 20, "\n".join(summary)
    for lr in sorted(est["lr"].unique()):
        assert any(line.startswith(f"{lr:<9.4g}") for line in summary), (lr, summary)
    cell = ci[(ci["lr"] == full_cells[0]) & (ci["parameter"] == "beta2") & (ci["method"] == "percentile")].iloc[0]
    assert f"[{cell['lower']:.4f}, {cell['upper']:.4f}]" in proc.stdout  # read from the table
    assert "no run converged" in proc.stdout and "every run diverged" in proc.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("preset", sorted(LR_GRID_STATUSES))
def test_lr_grid_reaches_the_statuses_of_each_preset(tmp_path, preset):
    _, est = run_sweep(
        tmp_path / "s",
        f"experiment={preset}",
        "sweep=lr_grid",
        "sweep.resamples=0",
        "launcher=debug",
        "launcher.runs_per_task=100",
        "intervals.plots=false",
    )
    assert set(est["status"]) == LR_GRID_STATUSES[preset], est[["lr", "status", "final_loss", "grad_norm"]]
    by_lr = est.sort_values("lr").groupby("lr", sort=True)["status"].first()
    assert by_lr.iloc[0] == "not_converged"  # slow at the bottom of the grid ...
    assert by_lr.iloc[-1] == "diverged"  # ... and past the stable bound (or float32's range) at the top


def _write_folder(out: Path, estimates: pd.DataFrame, intervals: pd.DataFrame) -> Path:
    out.mkdir(parents=True)
    estimates.to_parquet(out / "estimates.parquet")
    intervals.to_parquet(out / "intervals.parquet")
    return out


def _interval(lr: float, param: str, method: str, lower: float, upper: float, estimate: float = 1.0) -> dict:
    return {
        "lr": lr,
        "init_index": 0,
        "parameter": param,
        "method": method,
        "estimate": estimate,
        "lower": lower,
        "upper": upper,
    }


def test_summary_is_read_from_the_tables_and_says_why_a_cell_has_no_interval(tmp_path):
    runs = [(0.1, "ok")] * 3 + [(1.0, "diverged")] * 3 + [(0.01, "not_converged")] * 3
    est = pd.DataFrame({"lr": [r[0] for r in runs], "init_index": 0, "status": [r[1] for r in runs]})
    ci = pd.DataFrame(
        [
            _interval(0.1, "w", "percentile", 1.23456, 2.5, estimate=1.75),
            _interval(0.1, "w", "t", 1.1, 2.6),
            _interval(1.0, "w", "percentile", math.nan, math.nan),
            _interval(0.01, "w", "percentile", math.nan, math.nan),
        ]
    )
    text = sweep_summary(_write_folder(tmp_path / "a", est, ci))
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["lr", "ok", "n.c.", "div.", "parameter"]
    assert "95% percentile" in lines[0] and "95% t" in lines[0]
    assert re.match(r"0\.01\s+0\s+3\s+0\s+\(no interval: no run converged", lines[1])
    assert re.match(r"0\.1\s+3\s+0\s+0\s+w\s+1\.7500\s+\[1\.2346, 2\.5000\]\s+\[1\.1000, 2\.6000\]", lines[2])
    assert re.match(r"1\s+0\s+0\s+3\s+\(no interval: every run diverged", lines[3])
    ci.loc[0, "upper"] = 9.0  # another table, another summary: nothing is remembered
    assert "[1.2346, 9.0000]" in sweep_summary(_write_folder(tmp_path / "b", est, ci))


def test_summary_of_a_folder_without_tables_says_so(tmp_path):
    assert "no estimates.parquet" in sweep_summary(tmp_path)


def test_summary_of_a_model_with_many_parameters_shows_the_first_few(tmp_path):
    est = pd.DataFrame({"lr": [0.1] * 3, "init_index": 0, "status": ["ok"] * 3})
    names = [f"w{i}" for i in range(10)]
    ci = pd.DataFrame([_interval(0.1, n, m, 0.5, 1.5) for n in names for m in ("percentile", "normal")])
    lines = sweep_summary(_write_folder(tmp_path / "a", est, ci)).splitlines()
    assert "95% normal" in lines[0]  # no t for this model: the next bootstrap method
    assert sum(" w5 " in line for line in lines) == 1
    assert not any(" w6 " in line for line in lines)
    assert any("4 more parameters: see report.html" in line for line in lines)
