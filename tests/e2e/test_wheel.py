"""The package as users install it: a wheel in a fresh venv, and an editable install.

The wheel is built the way `pip install .` / `python -m build` builds it (sdist, then the wheel
from the sdist: MANIFEST.in and setup.py both play their part) from a copy of the repository's
files, installed into a fresh venv, and run from a temporary folder outside the repository.

The venvs reuse this interpreter's site-packages (`--system-site-packages`) for the
dependencies, so that the test takes seconds instead of installing torch again; what keeps it
honest: the package itself is installed into the venv (`--ignore-installed`, no PYTHONPATH,
the current folder outside the repository) and the test asserts that `pipeline`, its configs
and its data are imported from the venv; the wheel's declared dependencies are checked against
what the venv sees (torch: the CPU build this machine installs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def copy_of_repository(dest: Path) -> Path:
    """The files a clone would have (tracked, and untracked ones git does not ignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def fresh_venv(path: Path) -> Path:
    """A venv over this interpreter's packages, without its own pip and setuptools (pip and
    setuptools >= 64 come from the base, so that `python -m pip` installs into the venv)."""
    _ok(_run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)], cwd=path.parent))
    return path / "bin" / "python"


def pip_install(python: Path, *args: str) -> None:
    """Install into the venv of `python`, the package alone (its dependencies: see the docstring)."""
    _ok(_run([str(python), "-m", "pip", "install", "-q", "--no-deps", *args], cwd=python.parents[2]))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wheel")
    source = copy_of_repository(root / "source")
    _ok(_run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(source)], cwd=root))
    (wheel,) = (root / "dist").glob("pipeline-*.whl")
    return {"root": root, "source": source, "wheel": wheel}


WHERE = """
import importlib.metadata as md, json, pipeline, pipeline.config.shipped as shipped
from packaging.requirements import Requirement
dist = md.distribution("pipeline")
unmet = []
for spec in dist.requires or []:
    req = Requirement(spec)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # an extra (test): not a dependency of the installed package
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        version = None
    if version is None or not req.specifier.contains(version, prereleases=True):
        unmet.append(f"{spec} (found {version})")
print(json.dumps({"package": pipeline.__file__, "dist": str(dist._path), "conf": str(shipped.CONF_DIR),
                  "data": str(shipped.DATA_DIR), "unmet": unmet}))
"""


def test_the_wheel_carries_conf_data_and_py_typed(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    expected = {
        "pipeline/py.typed",
        "pipeline/resources/conf/config.yaml",
        "pipeline/resources/conf/launcher/slurm.yaml",
        "pipeline/resources/data/tdm/train.csv",
        "pipeline/resources/data/gistemp/gistemp_annual.csv",
        "hydra_plugins/pipeline_sweeper/pipeline_sweeper.py",
    }
    assert expected <= names, expected - names
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]


def test_the_installed_wheel_runs_a_sweep_from_a_folder_outside_the_repository(built, tmp_path):
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, "--ignore-installed", str(built["wheel"]))
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    where = json.loads(_ok(_run([str(python), "-c", WHERE], elsewhere)).stdout.strip().splitlines()[-1])
    site = tmp_path / "venv" / "lib"
    assert Path(where["package"]).is_relative_to(site) and Path(where["dist"]).is_relative_to(site)
    assert Path(where["conf"]) == Path(where["package"]).parent / "resources" / "conf"
    assert Path(where["data"]) == Path(where["package"]).parent / "resources" / "data"
    assert where["unmet"] == []  # every dependency the wheel declares is there, in a version it accepts

    sweep = tmp_path / "venv" / "bin" / "pipeline-sweep"  # the console script the wheel installed
    # a preset that reads a shipped data file, trained by local subprocesses (each imports the venv's package)
    _ok(_run([str(sweep), "experiment=gistemp_line", "sweep=bootstrap", "sweep.resamples=5"], elsewhere))
    (folder,) = (elsewhere / "results").iterdir()  # results/ under the current folder
    import pandas as pd

    estimates = pd.read_parquet(folder / "estimates.parquet")
    assert len(estimates) == 6 and (estimates["status"] == "ok").all()
    assert estimates[["w", "b"]].map(lambda v: bool(pd.notna(v) and abs(v) < float("inf"))).all().all()
    assert (folder / "report.html").is_file()
    # `-m` folds the grid into one sweep through the sweeper the wheel ships (hydra_plugins)
    multirun = [str(sweep), "-m", "optim.lr=0.05,0.1", "experiment=gistemp_line", "sweep=bootstrap"]
    dry = _ok(_run([*multirun, "sweep.resamples=2", "launcher=debug", "--dry-run"], elsewhere))
    assert "plan: 6 runs" in dry.stdout


def test_an_editable_install_reads_the_repositorys_own_conf(built, tmp_path):
    checkout = copy_of_repository(tmp_path / "checkout")
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, "--no-build-isolation", "-e", str(checkout))
    where = json.loads(_ok(_run([str(python), "-c", WHERE], tmp_path)).stdout.strip().splitlines()[-1])
    assert Path(where["package"]) == checkout / "pipeline" / "__init__.py"
    assert (Path(where["conf"]), Path(where["data"])) == (checkout / "conf", checkout / "data")
    assert not (checkout / "pipeline" / "resources").exists()  # no copy: the checkout's own files

    local = checkout / "conf" / "launcher" / "local.yaml"
    local.write_text(local.read_text().replace("max_parallel: 0", "max_parallel: 3"))  # an edit takes effect at once
    shown = _ok(_run([str(tmp_path / "venv" / "bin" / "pipeline-sweep"), "--cfg", "job", "launcher=local"], tmp_path))
    assert "max_parallel: 3" in shown.stdout
