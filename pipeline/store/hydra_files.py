"""Hydra's own files in a sweep folder (`.hydra/`, `sweep.log`), put back as they were when a
launch is refused or is a dry run.

Hydra creates `out_dir` and writes its files there before the app runs, so a command refused
by the checks, or a `--dry-run`, would leave a folder holding only them (or would overwrite
those of an earlier sweep in the same folder). `HydraFiles.before(out_dir)` notes, before
Hydra starts, which folders exist and what Hydra's files hold; `put_back(out_dir)` removes
what appeared since and restores what was changed, so the command leaves the disk as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.store.layout import HYDRA_DIR, LOGS, SWEEP_LOG

HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def _hydra_paths(out_dir: Path) -> list[Path]:
    return [out_dir / HYDRA_DIR / name for name in HYDRA_FILES] + [out_dir / SWEEP_LOG]


@dataclass
class HydraFiles:
    """Which folders existed and what Hydra's files held before Hydra started."""

    existed: set[Path] = field(default_factory=set)  # out_dir and the folders above it that existed
    contents: dict[Path, bytes] = field(default_factory=dict)  # Hydra's files that existed, as they were

    @classmethod
    def before(cls, out_dir: object) -> "HydraFiles":
        path = Path(str(out_dir)).expanduser().absolute()
        existed = {p for p in (path / HYDRA_DIR, path / LOGS, path, *path.parents) if p.is_dir()}
        contents = {p: p.read_bytes() for p in _hydra_paths(path) if p.is_file()}
        return cls(existed, contents)

    def put_back(self, out_dir: object) -> None:
        """Undo what Hydra (or a dry run) wrote in `out_dir`: files it added are removed, files it
        changed get their old bytes, and folders that did not exist and are now empty go."""
        path = Path(str(out_dir)).expanduser().absolute()
        for file in _hydra_paths(path):
            if file in self.contents:
                file.write_bytes(self.contents[file])
            elif file.is_file():
                file.unlink()
        for folder in (path / HYDRA_DIR, path / LOGS):
            if folder not in self.existed:
                _remove_if_empty(folder)
        for folder in (path, *path.parents):  # out_dir, then results/ ... up to what existed
            if folder in self.existed or not _remove_if_empty(folder):
                break


def _remove_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()  # only an empty folder: anything else in it stays
    except OSError:
        return False
    return True
