"""The policy hook's shape: (agent, "model:<pool>", "infer") -> allowed, rule, reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["PolicyAnswer", "PolicyCheck"]


class PolicyAnswer(Protocol):
    """What a policy check answers (the daemon's HookDecision has this shape)."""

    @property
    def allowed(self) -> bool: ...
    @property
    def rule(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def policy_version(self) -> str:
        """The policy that answered (lineage of the call's record); empty if unknown."""
        ...


PolicyCheck = Callable[[str, str, str], PolicyAnswer]
"""(agent, "model:<pool>", "infer") -> answer; the daemon passes Authority.check."""
