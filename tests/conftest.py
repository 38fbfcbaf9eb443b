"""Shared test helpers: compose the real `conf/` with overrides, run sweeps in-process
or through the console entry points, and read back the tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from pipeline.api import build_tables
from pipeline.config.schema import to_container
from pipeline.config.shipped import CONF_DIR
from pipeline.data.load import Dataset
from pipeline.launch.prepare import prepare
from pipeline.launch.submit import launch
from pipeline.train.problem import Problem, build_problem, build_problem_parts

REPO = Path(__file__).resolve().parents[1]

# The device every test problem and config trains on, in place of the one the test names:
# benchmarks/gpu_check.sh sets it to `cuda` to run the engine tests (marker `engines`) on a GPU.
# Unset (always, in the suite), each test trains where it says.
TEST_DEVICE = os.environ.get("PIPELINE_TEST_DEVICE") or None


def make_config(out_dir: Path, *overrides: str) -> dict[str, Any]:
    """The resolved config `pipeline-sweep <overrides> out_dir=<out_dir>` would run.

    Without a `sweep=` override the sweep is `bootstrap` (one learning rate), not the CLI's
    default `story` (a grid of four): tests that choose no sweep count runs of one cell.
    tests/e2e/test_first_contact.py runs the real default through the CLI.
    """
    chosen = any(o.startswith("sweep=") for o in overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *([] if chosen else ["sweep=bootstrap"]),
                *overrides,
                f"out_dir={out_dir}",
                "launcher.progress=false",
                *([f"train.device={TEST_DEVICE}"] if TEST_DEVICE else []),
            ],
        )
    return to_container(cfg)


def problem_from(cfg: dict[str, Any], dataset: Dataset) -> Problem:
    """The Problem of a config's model, loss, optimiser and `train.device` (or TEST_DEVICE) / `train.dtype`."""
    parts = build_problem_parts(cfg["model"], cfg["loss"], cfg["optim"], dataset)
    train = cfg.get("train", {})
    device = TEST_DEVICE or train.get("device", "auto")
    return build_problem(parts, dataset, device=device, dtype=train.get("dtype", "float32"))


def run_sweep(out_dir: Path, *overrides: str):
    """Prepare, launch and aggregate in this process; returns (launch report, estimates)."""
    cfg = make_config(out_dir, *overrides)
    report = launch(prepare(cfg))
    settings = {k: v for k, v in cfg["intervals"].items() if k != "at"}  # predictions: write_predictions
    build_tables(out_dir, **settings, at=None, report=False)
    return report, pd.read_parquet(out_dir / "estimates.parquet")


def run_cli(app: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `pipeline-<app>` as a user would, from the repository root."""
    code = f"from pipeline.cli import {app}_main; {app}_main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "sweep"


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test is marked with its tier, the folder it lives in (tests/unit, tests/integration,
    tests/e2e), so `-m unit` and the like select a tier; everything under tests/e2e is e2e."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
