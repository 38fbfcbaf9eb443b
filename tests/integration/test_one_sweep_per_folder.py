"""Issue 22, item 4: a folder holds one sweep.

A launch whose run-defining settings (experiment, data, model, loss, optimiser, epochs, ...)
differ from those of the sweep in its `out_dir` is refused before anything is written, with
the differences and the two ways on; `--new-sweep` moves the old sweep aside (never deletes
it); growing the grid stays a relaunch of the same sweep.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.errors import ConfigError
from pipeline.launch.prepare import prepare
from tests.conftest import make_config, run_cli, run_sweep

LINEAR = ("experiment=linear_synthetic", "sweep=bootstrap", "sweep.resamples=3", "launcher=debug", "train.epochs=50")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path: equal snapshots are byte-identical folders."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def linear_folder(tmp_path) -> Path:
    out = tmp_path / "sweep"
    run_sweep(out, *LINEAR)
    return out


def test_a_launch_of_another_experiment_is_refused_and_the_folder_is_byte_identical(linear_folder):
    before = snapshot(linear_folder)
    with pytest.raises(ConfigError) as caught:
        prepare(make_config(linear_folder, "experiment=gistemp_line", "sweep=single", "launcher=debug"))
    message = str(caught.value)
    assert f"{linear_folder} holds another sweep" in message
    assert "experiment: 'linear_synthetic' -> 'gistemp_line'" in message
    assert "data: other values" in message and "train.epochs: 50 -> 500" in message
    assert "another out_dir" in message and "--new-sweep" in message and "nothing is deleted" in message
    assert snapshot(linear_folder) == before


@pytest.mark.parametrize(
    "change, named",
    [
        ("train.log_every=10", "train.log_every: 100 -> 10"),
        ("+optim.momentum=0.5", "optim.momentum: '(unset)' -> 0.5"),
        ("train.dtype=float64", "train.dtype: 'float32' -> 'float64'"),
        ("train.param_tol=1e-6", "train.param_tol: '(unset)' -> 1e-06"),
    ],
)
def test_each_run_defining_setting_is_named(linear_folder, change, named):
    with pytest.raises(ConfigError, match="holds another sweep") as caught:
        prepare(make_config(linear_folder, *LINEAR, change))
    assert named in str(caught.value)


def test_a_grown_grid_is_a_relaunch_of_the_same_sweep(linear_folder):
    report, est = run_sweep(linear_folder, *LINEAR, "sweep.resamples=6", "sweep.lr=[0.1,0.3]")
    assert report.n_skipped == 4 and report.n_planned == 14
    assert len(est) == 14


def test_the_cli_refuses_before_hydra_writes_into_the_folder(linear_folder):
    before = snapshot(linear_folder)
    proc = run_cli("sweep", "experiment=gistemp_line", "sweep=single", "launcher=debug", f"out_dir={linear_folder}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "holds another sweep" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(linear_folder) == before


def test_new_sweep_moves_the_old_one_aside_and_starts_afresh(linear_folder):
    before = snapshot(linear_folder)
    report, est = run_sweep(
        linear_folder, "experiment=gistemp_line", "sweep=single", "launcher=debug", "launcher.new_sweep=true"
    )
    assert report.replaced is not None and report.replaced.parent == linear_folder / "replaced"
    kept = snapshot(report.replaced)
    assert kept == {k: v for k, v in before.items() if not k.startswith(".")}  # every file, byte for byte
    assert report.n_tasks == 1 and set(est["experiment"]) == {"gistemp_line"} and len(est) == 1
    plan = pd.read_parquet(linear_folder / "plan.parquet")
    assert set(plan["run_id"]) == set(est["run_id"])
    # the old sweep's parts are not this sweep's: a relaunch of the old one is refused now
    with pytest.raises(ConfigError, match="holds another sweep"):
        prepare(make_config(linear_folder, *LINEAR))


def test_a_relaunch_on_changed_data_is_refused_naming_the_data(tmp_path):
    csv = tmp_path / "rows.csv"
    csv.write_text("x,y\n0,1\n1,3\n2,5.1\n3,7\n")
    args = ("experiment=user_data", f"data.path={csv}", "sweep=single", "launcher=debug", "train.epochs=20")
    run_sweep(tmp_path / "s", *args)
    csv.write_text("x,y\n0,1\n1,3\n2,5.2\n3,7\n")  # one value edited
    with pytest.raises(ConfigError, match=r"holds another sweep \(data: other values"):
        prepare(make_config(tmp_path / "s", *args))
    again, _ = run_sweep(tmp_path / "s", *args, "launcher.new_sweep=true")
    assert again.n_skipped == 0 and again.n_tasks == 1
