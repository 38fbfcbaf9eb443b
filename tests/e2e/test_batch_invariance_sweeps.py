"""A run's numbers do not depend on `launcher.runs_per_task` or the launcher (issue 22, item 2):
the same sweep in this process (torch's own threads) in tasks of 5 runs, and in local
subprocesses (one thread each) in tasks of 7, gives the same estimates and curves to the bit."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import run_sweep

WHERE = ["engine", "device", "host", "task", "slurm_job_id", "wall_time"]  # what says where a run ran


@pytest.mark.parametrize(
    "experiment, settings",
    [
        ("tdm_quadratic", ("train.epochs=300", "train.log_every=50", "sweep.lr=[0.03,0.075]")),
        ("toy_mlp", ("train.epochs=60", "train.log_every=20", "sweep.lr=[0.01,0.1]")),
    ],
)
def test_runs_per_task_and_the_launcher_change_no_bit(tmp_path, experiment, settings):
    args = (f"experiment={experiment}", "sweep=bootstrap", "sweep.resamples=11", *settings, "intervals.plots=false")
    _, here = run_sweep(tmp_path / "debug", *args, "launcher=debug", "launcher.runs_per_task=5")
    _, local = run_sweep(tmp_path / "local", *args, "launcher=local", "launcher.runs_per_task=7")
    assert len(here) == len(local) == 24 and here["task"].nunique() == 5 and local["task"].nunique() == 4
    pd.testing.assert_frame_equal(here.drop(columns=WHERE), local.drop(columns=WHERE), check_exact=True)
    curves = [  # the order of runs follows the tasks; the bits of each run's curve must not
        pd.read_parquet(tmp_path / name / "curves.parquet").sort_values(["run_id", "epoch"], ignore_index=True)
        for name in ("debug", "local")
    ]
    pd.testing.assert_frame_equal(*curves, check_exact=True)
