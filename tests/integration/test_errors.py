"""Issue 3: bad input gets one clear message naming the problem, before any task starts."""

import pandas as pd
import pytest

from pipeline.core.errors import ConfigError
from pipeline.launch.prepare import validate
from tests.conftest import make_config, run_cli


def _problems(tmp_path, *overrides):
    with pytest.raises(ConfigError) as err:
        validate(make_config(tmp_path / "sweep", *overrides))
    return str(err.value)


@pytest.fixture
def csv(tmp_path):
    def write(text):
        path = tmp_path / "user.csv"
        path.write_text(text)
        return f"data.path={path}"

    return write


def test_missing_data_file(tmp_path):
    msg = _problems(tmp_path, "data.path=/nowhere/train.csv", "data.test_path=null")
    assert "`data.path`" in msg and "/nowhere/train.csv" in msg and "not found" in msg


def test_missing_column(tmp_path, csv):
    msg = _problems(tmp_path, csv("x,z\n1,2\n2,3\n"), "data.test_path=null")
    assert "`data.y`" in msg and "'y'" in msg and "columns: x, z" in msg


def test_non_numeric_value(tmp_path, csv):
    msg = _problems(tmp_path, csv("x,y\n1,2\n2,abc\n"), "data.test_path=null")
    assert "'y'" in msg and "non-numeric" in msg and "'abc'" in msg and "row 2" in msg


@pytest.mark.parametrize("bad", ["", "nan", "inf"])
def test_non_finite_value(tmp_path, csv, bad):
    msg = _problems(tmp_path, csv(f"x,y\n1,2\n{bad},3\n"), "data.test_path=null")
    assert "'x'" in msg and "non-finite" in msg and "row 2" in msg


def test_empty_grid(tmp_path):
    assert "`sweep.lr` is empty" in _problems(tmp_path, "sweep.lr=[]")
    assert "`sweep.init` is empty" in _problems(tmp_path, "sweep.init=[]")


@pytest.mark.parametrize("lr", ["0", "-0.1"])
def test_non_positive_learning_rate(tmp_path, lr):
    msg = _problems(tmp_path, f"sweep.lr=[1e-3,{lr}]")
    assert f"`sweep.lr` must hold positive finite learning rates; got {float(lr)}" in msg
    assert "got 0.001" not in msg  # only the bad value is named
    assert f"`optim.lr` must hold positive finite learning rates; got {float(lr)}" in _problems(
        tmp_path, f"optim.lr={lr}"
    )


def test_wrong_init_length_and_several_problems_at_once(tmp_path):
    msg = _problems(tmp_path, "init=[1.0,2.0]", "train.epochs=0", "launcher.runs_per_task=0")
    assert "3 problem(s)" in msg
    assert "one value per model parameter (3)" in msg and "`train.epochs`" in msg
    assert "`launcher.runs_per_task`" in msg


def test_unknown_target(tmp_path):
    msg = _problems(tmp_path, "model._target_=pipeline.models.NoSuchModel")
    assert "`model._target_`" in msg and "NoSuchModel" in msg


def test_cli_rejects_bad_input_before_any_task(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "sweep.lr=[-1]", f"out_dir={out}")
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "`sweep.lr` must hold positive" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "parts").exists() and not (out / "logs").exists()


def test_cli_unknown_experiment_names_it(tmp_path):
    proc = run_cli("sweep", "experiment=no_such_experiment", f"out_dir={tmp_path / 's'}")
    assert proc.returncode != 0
    assert "no_such_experiment" in proc.stderr and "tdm_quadratic" in proc.stderr


def test_cli_misspelt_key_fails_at_compose(tmp_path):
    proc = run_cli("sweep", "train.epoch=5", f"out_dir={tmp_path / 's'}")
    assert proc.returncode != 0 and "epoch" in proc.stderr


def test_bad_input_after_results_keeps_them(tmp_path):
    """A failed validation on relaunch touches nothing already computed."""
    from tests.conftest import run_sweep

    out = tmp_path / "sweep"
    run_sweep(out, "experiment=linear_synthetic", "sweep=single", "launcher=debug", "train.epochs=50")
    before = pd.read_parquet(out / "estimates.parquet")
    proc = run_cli("sweep", "experiment=linear_synthetic", "sweep=single", "sweep.lr=[0]", f"out_dir={out}")
    assert proc.returncode == 2
    pd.testing.assert_frame_equal(before, pd.read_parquet(out / "estimates.parquet"))
    assert len(list((out / "parts").glob("*.parquet"))) == 1
