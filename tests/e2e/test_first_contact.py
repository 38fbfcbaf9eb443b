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
    assert cfg["launcher"]["runs_per_task"] == "auto"  # chunked like every other sweep


def test_no_shipped_config_pins_the_chunking():
    """So that "pinned by launcher.runs_per_task=N" in the log is always the user's own doing."""
    for path in CONF_DIR.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            key, _, value = line.split("#")[0].partition(":")
            assert not (key.strip() == "runs_per_task" and value.strip() not in ("auto", "")), (path, line)


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
    assert not WARNING_LINE.search(proc.stderr), proc.stderr  # no raw line of Python's warnings module
    assert "auto: 1 task(s)" in proc.stdout  # 164 runs: one local task, sized like any sweep
    for lr in sorted(est["lr"].unique()):
        assert any(line.startswith(f"{lr:<9.4g}") for line in summary), (lr, summary)
    cell = ci[(ci["lr"] == full_cells[0]) & (ci["parameter"] == "beta2") & (ci["method"] == "percentile")].iloc[0]
    assert f"[{cell['lower']:.4f}, {cell['upper']:.4f}]" in proc.stdout  # read from the table
    assert "no run converged: raise train.epochs" in proc.stdout and "every run diverged: lower lr" in proc.stdout


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
    est = pd.DataFrame(
        {"lr": [r[0] for r in runs], "init_index": 0, "resample": [0, 1, 2] * 3, "status": [r[1] for r in runs]}
    )
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
    est = pd.DataFrame({"lr": [0.1] * 3, "init_index": 0, "resample": [0, 1, 2], "status": ["ok"] * 3})
    names = [f"w{i}" for i in range(10)]
    ci = pd.DataFrame([_interval(0.1, n, m, 0.5, 1.5) for n in names for m in ("percentile", "normal")])
    lines = sweep_summary(_write_folder(tmp_path / "a", est, ci)).splitlines()
    assert "95% normal" in lines[0]  # no t for this model: the next bootstrap method
    assert sum(" w5 " in line for line in lines) == 1
    assert not any(" w6 " in line for line in lines)
    assert any("4 more parameters: see report.html" in line for line in lines)


# A line Python's `warnings` module prints: "<file>:<line>: <Category>Warning: <message>".
WARNING_LINE = re.compile(r"^\S+:\d+: \w*Warning: ", re.MULTILINE)
NEXT_COMMANDS = (  # the README's "three things to try next", each with an out_dir of the test's own
    ("sweep.resamples=1000",),
    ("experiment=gistemp_line", "sweep=lr_grid"),
    ("experiment=user_data", "data.path=plants.csv", "data.x=[light,water]", "data.y=growth"),
)


def _plants(folder: Path) -> None:
    """The README's plants.csv."""
    rng = np.random.default_rng(1)
    light, water = rng.uniform(0, 10, 80), rng.uniform(0, 5, 80)
    growth = 2 + 0.5 * light - 0.8 * water + 0.1 * light * water + rng.normal(0, 1, 80)
    pd.DataFrame({"light": light, "water": water, "growth": growth}).to_csv(folder / "plants.csv", index=False)


def _answer_table(printed: str) -> str:
    return printed[printed.index("\nlr ") : printed.index("\ntables: ")]


@pytest.mark.e2e
def test_the_readme_next_commands_are_quiet_and_give_their_answers(tmp_path):
    _plants(tmp_path)
    printed = []
    for k, args in enumerate(NEXT_COMMANDS):
        proc = run_cli("sweep", *args, f"out_dir={tmp_path / str(k)}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not WARNING_LINE.search(proc.stderr), proc.stderr
        printed.append(proc.stdout)
    assert "auto: 1 task(s)" in printed[0]  # 4004 runs of a second's work: one task, as with runs_per_task=auto
    gistemp = run_cli("aggregate", f"out_dir={tmp_path / '1'}", cwd=tmp_path).stdout  # the answer, again
    assert _answer_table(gistemp) == _answer_table(printed[1])
    assert re.search(r"^0\.1 .* w +0\.0078 +- +\[0\.0071, 0\.0085\]", gistemp, re.MULTILINE), gistemp
    assert "! no bootstrap draws: set sweep.resamples" in gistemp and "too few usable draws" not in gistemp
    from pipeline.launch.status import summary, task_table

    folder = tmp_path / "1"
    assert "(2 ok, 2 not_converged, 3 diverged)" in summary(folder, task_table(folder))  # pipeline-status
    plants = printed[2]
    assert re.search(r"^1 +0 +\d+ +\d+ +\(no interval: .*diverged: lower lr \(below lr_max_stable", plants, re.M)
    assert re.search(r"^ +! \d+ of 40 draws dropped", plants, re.M)  # lr 0.01: an interval from fewer draws, marked


@pytest.mark.e2e
def test_a_refused_command_and_a_dry_run_leave_results_as_they_were(tmp_path):
    refused = run_cli("sweep", "optim.lr=-1", cwd=tmp_path)
    assert refused.returncode == 2 and "`optim.lr` must be a positive finite learning rate" in refused.stderr
    assert refused.stderr.count("\n  - ") == 1 and "sweep.lr = [-1.0" in refused.stderr  # one problem, where it went
    dry = run_cli("sweep", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "dry run: nothing submitted" in dry.stdout
    assert list(tmp_path.iterdir()) == []  # no results/ at all
    (tmp_path / "results").mkdir()
    out = tmp_path / "results" / "kept"
    done = run_cli("sweep", "sweep=single", "launcher=debug", f"out_dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    for args in (("sweep.lr=[-1]",), ("--dry-run", "sweep.resamples=5")):
        proc = run_cli("sweep", "sweep=single", "launcher=debug", f"out_dir={out}", *args, cwd=tmp_path)
        assert proc.returncode in (0, 2), proc.stderr[-2000:]
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before, args
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["kept"]


@pytest.mark.e2e
def test_help_says_what_the_tool_does_and_lists_its_flags():
    text = run_cli("sweep", "--help").stdout
    assert text.splitlines()[0].startswith("pipeline-sweep: sweep a small PyTorch fit over learning rates")
    for flag in ("--dry-run", "--wait ", "--wait-lock", "--multirun", "--cfg job", "--hydra-help"):
        assert flag in text, flag
    assert "powered by Hydra" not in text and "experiment: gistemp_hinge" in text  # Hydra's groups still listed
