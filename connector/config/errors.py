"""What `load_config` raises: every problem found, each naming its field."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # dotted path of the field, e.g. "peers.alice.balance.maximum"
    message: str  # what is wrong with it

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(ValueError):
    """The configuration is unusable; `problems` lists everything wrong with it at once."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...], source: str | None = None):
        self.problems = tuple(problems)
        self.source = source
        where = source or "the embedded defaults"
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        count = len(self.problems)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in configuration from {where}:\n{lines}")

    @property
    def paths(self) -> list[str]:
        return [problem.path for problem in self.problems]
