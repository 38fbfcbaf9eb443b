"""Where the shipped configs (`conf/`) and data sets (`data/`) are.

In a repository checkout (an editable install, or running from the clone) they are the
repository's own top-level `conf/` and `data/`, so an edit there takes effect at once. A
wheel (`pip install .`, `pip install git+...`) carries copies of both inside the package,
as `pipeline/resources/` (setup.py copies them at build time); that copy is used when
there is one.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
RESOURCES = PACKAGE_DIR / "resources"  # only in a built package: never in the repository


def shipped_root() -> Path:
    """The folder holding `conf/` and `data/`: the package's copy when installed, else the repository."""
    if (RESOURCES / "conf" / "config.yaml").is_file():
        return RESOURCES
    return PACKAGE_DIR.parent


SHIPPED_ROOT = shipped_root()
CONF_DIR = SHIPPED_ROOT / "conf"
DATA_DIR = SHIPPED_ROOT / "data"
