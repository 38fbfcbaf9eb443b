"""The errors users see. Imported by every module, importing nothing of ours."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user's config or data cannot be run; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the sweep config:\n{lines}")
