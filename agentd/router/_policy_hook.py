"""The router's policy seam: every message is checked before it is stored.

Until the policy engine is wired in, `AllowAll` answers; the hook and the decision record it
produces already exist so that wiring policy in changes no caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["AllowAll", "HookDecision", "PolicyHook"]


@dataclass(frozen=True)
class HookDecision:
    allowed: bool
    rule: str
    reason: str = ""
    policy_version: str = ""


class PolicyHook(Protocol):
    def check(
        self, subject: str, obj: str, action: str, args: dict[str, Any] | None = None
    ) -> HookDecision: ...


class AllowAll:
    """Allows every request and says so in the rule it reports."""

    def check(
        self, subject: str, obj: str, action: str, args: dict[str, Any] | None = None
    ) -> HookDecision:
        return HookDecision(True, rule="allow-all (no policy configured)", policy_version="none")
