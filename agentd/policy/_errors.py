"""Policy errors: every problem names its file, line and reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agentd.errors import ConfigError


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong with a policy file, at `file:line` (line 0: the file as a whole)."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class PolicyError(ConfigError):
    """A policy directory failed validation; nothing of it was loaded.

    `located` holds each problem with its file and line; `problems` (from `ConfigError`) holds the
    same as `file:line: reason` strings.
    """

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        if not problems:
            raise ValueError("PolicyError needs at least one problem")
        self.located = tuple(problems)
        files = sorted({p.file for p in self.located})
        super().__init__(", ".join(files), [str(p) for p in self.located])


def fail(file: str, line: int, reason: str) -> PolicyError:
    """Build a `PolicyError` with a single problem (for `raise fail(...)`)."""
    return PolicyError([PolicyProblem(file, line, reason)])
