"""The errors users see. Imported by every module, importing nothing of ours."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user's config or data cannot be run; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the sweep config:\n{lines}")


class FolderError(ConfigError):
    """The sweep folder cannot be used right now (held by another launch, disk full): one
    plain message naming the folder, reported like a config mistake (exit code 2)."""

    def __init__(self, message: str):
        super().__init__([message])
        self.args = (message,)

    def __str__(self) -> str:
        return self.args[0]


class Interrupted(Exception):
    """The user stopped a sweep (SIGINT / SIGTERM): the message says what was saved and how to resume."""


class DiskFullError(FolderError):
    """No space (or quota) left while writing a sweep folder's file; nothing written is lost."""


class DegenerateCellWarning(UserWarning):
    """A grid cell had too few usable resamples for an interval: its bounds are NaN, with the reason."""


class DroppedRunsWarning(UserWarning):
    """A grid cell left out more than `max_dropped_share` of its bootstrap draws."""
