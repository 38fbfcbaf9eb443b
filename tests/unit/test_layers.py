"""The package is a one-way house: its layers are import-linter contracts (pyproject.toml,
`[tool.importlinter]`), checked here with the real tool, and reading a sweep folder imports
neither torch nor Hydra at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the package found under `root` (its pyproject.toml holds the contracts)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin"},
    )


def test_the_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


def test_a_backward_import_breaks_the_layers_contract(tmp_path):
    """Proof the contract can fail: a statistics module importing the launcher goes up three layers."""
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(REPO / "pyproject.toml", copy)
    shutil.copytree(REPO / "pipeline", copy / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "pipeline" / "stats" / "bounds.py", "a") as fh:
        fh.write("\nfrom pipeline.launch.submit import launch  # noqa: E402,F401 - the deliberate mistake\n")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "pipeline.stats is not allowed to import pipeline.launch" in result.stdout
    assert "pipeline.stats.bounds -> pipeline.launch.submit" in result.stdout


@pytest.mark.parametrize(
    "module",
    [
        "pipeline",
        "pipeline.api",
        "pipeline.results.aggregate",
        "pipeline.launch.status",
        "pipeline.store",
        "pipeline.stats.intervals",
        "pipeline.report.pngs",
        "pipeline.report.page",
        "pipeline.report.summary",
    ],
)
def test_reading_a_sweep_folder_imports_no_torch(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'hydra') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
