"""`pipeline-sweep -m`: Hydra's multirun over the grid's axes is ONE sweep (hydra_plugins/pipeline_sweeper).

The end-to-end tests run the real CLI in a subprocess: the sweeper is found by Hydra's
plugin scan, and a refusal must end in exit code 2 with no traceback, which only a real
process shows. The rule itself (which keys fold, what the refusal says) is tested in
this process on parsed overrides.
"""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from hydra_plugins.pipeline_sweeper.pipeline_sweeper import Fold, fold, refusal_message
from tests.conftest import run_cli

FAST = ("experiment=linear_synthetic", "launcher=debug", "launcher.progress=false", "intervals.plots=false")
NOTHING_PRESET = {"sweep.lr": None, "sweep.init": None, "sweep.name": "bootstrap"}


def _fold(*overrides: str, preset: dict = NOTHING_PRESET) -> Fold:
    return fold(OverridesParser.create().parse_overrides(list(overrides)), preset)


def _hydra_files(out: Path) -> set:
    return {p.name for p in (out / ".hydra").iterdir()}


@pytest.mark.e2e
def test_swept_lr_is_one_sweep_holding_both_rates(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "-m", "optim.lr=0.01,0.03", "sweep.resamples=5", "sweep=bootstrap", *FAST, f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert "multirun: optim.lr=0.01,0.03 -> one sweep with sweep.lr=[0.01,0.03]" in proc.stdout
    est = pd.read_parquet(out / "estimates.parquet")
    assert est.groupby("lr").size().to_dict() == {0.01: 6, 0.03: 6}  # 2 rates x (resample 0 + 5 draws)
    assert list(tmp_path.iterdir()) == [out]  # one sweep folder, nothing beside it
    assert not (out / "0").exists()  # Hydra's per-job subdir is out_dir itself
    assert {"config.yaml", "hydra.yaml", "overrides.yaml"} <= _hydra_files(out)
    assert "sweep.lr=[0.01,0.03]" in (out / ".hydra" / "overrides.yaml").read_text()
    assert "optim.lr=0.01,0.03" in (out / "multirun.yaml").read_text()  # the command as typed


@pytest.mark.e2e
def test_swept_init_folds_into_sweep_init(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "-m", "init=[0,0],[1,1]", "sweep.resamples=1", "sweep=bootstrap", *FAST, f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert "-> one sweep with sweep.init=[[0,0],[1,1]]" in proc.stdout
    est = pd.read_parquet(out / "estimates.parquet")
    assert sorted(map(tuple, est.drop_duplicates("init_index")["init"])) == [(0.0, 0.0), (1.0, 1.0)]
    assert len(est) == 4


@pytest.mark.e2e
def test_swept_epochs_is_refused_with_the_equivalent_commands(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "-m", "train.epochs=10,20", "sweep.resamples=5", "launcher=debug", f"out_dir={out}")
    assert proc.returncode == 2
    assert "train.epochs" in proc.stderr and "Traceback" not in proc.stderr
    assert f"pipeline-sweep train.epochs=10 sweep.resamples=5 launcher=debug out_dir={out}-epochs-10" in proc.stderr
    assert f"pipeline-sweep train.epochs=20 sweep.resamples=5 launcher=debug out_dir={out}-epochs-20" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # refused before any folder was made


@pytest.mark.e2e
def test_without_multirun_an_override_runs_as_before(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("sweep", "optim.lr=0.03", "sweep=single", *FAST, f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert not any(line.startswith("multirun:") for line in proc.stdout.splitlines())
    assert pd.read_parquet(out / "estimates.parquet")["lr"].tolist() == [0.03]
    assert "overrides.yaml" in _hydra_files(out) and not (out / "multirun.yaml").exists()


def test_sweep_lr_values_and_lists_join_one_axis_in_order_without_repeats():
    result = _fold("sweep.lr=[0.1,0.2],0.3,0.1", "sweep.resamples=5")
    assert not result.refusals
    assert result.job_overrides() == ["sweep.resamples=5", "sweep.lr=[0.1,0.2,0.3]"]


def test_range_and_choice_sweeps_fold_like_lists():
    assert _fold("optim.lr=choice(0.01,0.1)").axis_overrides() == ["sweep.lr=[0.01,0.1]"]
    assert _fold("optim.lr=range(1,4)").axis_overrides() == ["sweep.lr=[1,2,3]"]


def test_sweep_init_may_sweep_lists_of_vectors():
    result = _fold("sweep.init=[[0,0],[1,1]],[2,2]")
    assert result.axis_overrides() == ["sweep.init=[[0,0],[1,1],[2,2]]"]


def test_both_axes_fold_and_plain_overrides_pass_through_unchanged():
    result = _fold("optim.lr=0.01,0.03", "init=[0,0],[1,1]", "experiment=linear_synthetic", "+optim.momentum=0.9")
    assert result.job_overrides() == [
        "experiment=linear_synthetic",
        "+optim.momentum=0.9",
        "sweep.lr=[0.01,0.03]",
        "sweep.init=[[0,0],[1,1]]",
    ]
    assert result.summary() == (
        "multirun: optim.lr=0.01,0.03 init=[0,0],[1,1] -> one sweep with sweep.lr=[0.01,0.03] sweep.init=[[0,0],[1,1]]"
    )


@pytest.mark.parametrize(
    "swept",
    [
        "experiment=a,b",
        "sweep=single,bootstrap",
        "sweep.resamples=5,10",
        "sweep.seed=1,2,3",
        "train.epochs=100,200",
        "out_dir=a,b",
    ],
)
def test_keys_that_are_no_grid_axis_are_refused_by_name(swept):
    result = _fold(swept, "launcher=debug")
    key = swept.split("=")[0]
    assert [r.override.key_or_group for r in result.refusals] == [key]
    assert f"- {key} ({swept})" in refusal_message(result)


def test_refused_resamples_also_offers_the_one_sweep_with_the_largest():
    message = refusal_message(_fold("sweep.resamples=5,10", "optim.lr=0.01,0.03"))
    assert "pipeline-sweep sweep.resamples=5 'sweep.lr=[0.01,0.03]'" in message
    assert "or one sweep, the largest:\n  pipeline-sweep sweep.resamples=10 'sweep.lr=[0.01,0.03]'" in message


def test_swept_lr_under_a_preset_lr_grid_is_refused_per_base_rate():
    preset = {"sweep.lr": "${scaled:${optim.lr},[0.1,1,10]}", "sweep.init": None, "sweep.name": "lr_grid"}
    message = refusal_message(_fold("sweep=lr_grid", "optim.lr=0.1,0.2", preset=preset))
    assert "sweep.lr is already set" in message and "sweep=lr_grid" in message
    assert "pipeline-sweep optim.lr=0.1 sweep=lr_grid\n  pipeline-sweep optim.lr=0.2 sweep=lr_grid" in message


@pytest.mark.parametrize(
    "swept, says",
    [
        (("optim.lr=interval(0.01,0.1)",), "an interval has no finite list of values"),
        (("optim.lr=0.1,0.2", "sweep.lr=0.3,0.4"), "sweep.lr is swept too"),
        (("optim.lr=a,b",), "learning rates must be numbers"),
        (("init=1,2",), "initial values must be vectors"),
    ],
)
def test_meaningless_axis_sweeps_are_refused_with_the_fix_and_no_per_value_commands(swept, says):
    message = refusal_message(_fold(*swept))
    assert says in message and "Run one sweep per value" not in message


def test_many_equivalent_commands_are_summarised():
    message = refusal_message(_fold("train.epochs=1,2,3", "sweep.seed=1,2,3"))
    assert message.count("\n  pipeline-sweep ") == 8 and "(9 commands in all)" in message


def test_the_sweeper_is_found_outside_the_repository(tmp_path):
    """As the installed console script runs: another working folder, no repository on sys.path
    (`python -P`), so Hydra finds the sweeper only through the installed package."""
    code = "from pipeline.cli import sweep_main; sweep_main()"
    proc = subprocess.run(
        [sys.executable, "-P", "-c", code, "--cfg", "hydra"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PipelineSweeper" in proc.stdout
