"""A sweep folder written before the package moved into subpackages still works.

tests/fixtures/premove/sweep was written by the flat-module code (commit 68abcf8; its
README says how): its config.yaml names `_target_`s by their old paths and holds the old
flat launcher dict. Today's code aggregates it to the same tables, draws its report, and
relaunches it (from its command line, or from its own config.yaml) without training a run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline import aggregate_sweep, open_sweep
from pipeline.api import sweep_from_config
from pipeline.launch.prepare import prepare
from pipeline.launch.submit import launch
from tests.conftest import make_config

PREMOVE = Path(__file__).parents[1] / "fixtures" / "premove" / "sweep"
N_RUNS = 6


@pytest.fixture
def old_folder(tmp_path: Path) -> Path:
    out = tmp_path / "premove"
    shutil.copytree(PREMOVE, out)
    return out


def command_line(out: Path) -> list[str]:
    """The overrides the folder was made with (Hydra's record of them), out_dir aside."""
    overrides = OmegaConf.load(out / ".hydra" / "overrides.yaml")
    return [o for o in overrides if not o.startswith("out_dir=")]


def test_an_old_folder_aggregates_to_the_tables_the_old_code_wrote_and_reports(old_folder):
    stored = {name: pd.read_parquet(PREMOVE / f"{name}.parquet") for name in ("estimates", "intervals", "curves")}
    result = aggregate_sweep(old_folder, at=[0.5])
    sweep = open_sweep(old_folder)
    assert result.n_found == N_RUNS and sweep.status_counts == {"ok": N_RUNS}
    pd.testing.assert_frame_equal(sweep.estimates[stored["estimates"].columns], stored["estimates"])
    pd.testing.assert_frame_equal(sweep.curves[stored["curves"].columns], stored["curves"])
    keys = ["lr", "init_index", "parameter", "method"]
    old = stored["intervals"].set_index(keys)[["estimate", "lower", "upper"]]
    new = sweep.intervals.set_index(keys).loc[old.index, ["estimate", "lower", "upper"]]
    pd.testing.assert_frame_equal(new, old)
    assert sweep.predictions is not None and len(sweep.predictions)
    assert sweep.report_path is not None and "linear_synthetic" in sweep.report_path.read_text()


def test_an_old_folder_relaunches_from_its_command_line_without_training(old_folder):
    prepared = prepare(make_config(old_folder, *command_line(old_folder)))
    stored_ids = pd.read_parquet(PREMOVE / "plan.parquet")["run_id"].tolist()
    assert [r.run_id for r in prepared.runs] == stored_ids  # run ids unchanged by the move
    report = launch(prepared)
    assert (report.n_planned, report.n_skipped, report.n_tasks) == (N_RUNS, N_RUNS, 0)


def test_an_old_folder_relaunches_from_its_own_config_yaml(old_folder, capsys):
    cfg = OmegaConf.to_container(OmegaConf.load(old_folder / "config.yaml"))
    assert cfg["model"]["_target_"] == "pipeline.models.Polynomial" and "partition" in cfg["launcher"]
    cfg["out_dir"] = str(old_folder)
    folder = sweep_from_config(cfg)
    assert "6 of 6 runs have results" in capsys.readouterr().out and not folder.failed_tasks
    assert len(list((old_folder / "parts").glob("*.parquet"))) == 3  # nothing trained: no new part
