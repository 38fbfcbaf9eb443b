"""Builds the wheel with the shipped configs and data sets inside the package.

The repository keeps `conf/` and `data/` at its top level (where users read and edit
them); a wheel carries copies as `pipeline/resources/conf` and `pipeline/resources/data`,
which `pipeline.config.shipped` finds once installed. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
SHIPPED = ("conf", "data")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", ".gitattributes")


class BuildWithResources(build_py):
    """build_py, then conf/ and data/ copied into the built package's resources/."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the repository's own folders
            return
        target = Path(self.build_lib) / "pipeline" / "resources"
        for name in SHIPPED:
            if (HERE / name).is_dir():
                shutil.rmtree(target / name, ignore_errors=True)
                shutil.copytree(HERE / name, target / name, ignore=SKIPPED)


setup(cmdclass={"build_py": BuildWithResources})
