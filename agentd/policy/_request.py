"""What an enforcement point asks (`Request`) and what it is told (`Decision`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agentd.errors import PolicyDenied

Effect = Literal["allow", "deny", "approval_required"]
Stage = Literal["request", "access", "constraint", "taint", "approval"]


@dataclass(frozen=True)
class Request:
    """One question to the policy: may `subject` do `action` on `object` with `args`?

    Subjects are agent names (`intake`), operators (`operator:alice`), roles (`role:admin`) or
    registered external agents; objects are `tool:<name>`, `agent:<name>`, `model:<pool>`,
    `ctl:<verb>` and `api:<verb>`; actions are `call`, `send`, `infer`, `spawn`, `register` and
    the control verbs. `args` are a tool call's JSON arguments (None: no arguments).
    `tainted`: the run asking has received untrusted content (the tool gateway's own record of
    it, never the caller's word); `[[taint]]` rules in constraints.toml decide what that means.
    """

    subject: str
    object: str
    action: str
    args: Mapping[str, Any] | None = None
    tainted: bool = False


@dataclass(frozen=True)
class Decision:
    """The answer, the rule that decided it, why, and the policy version that gave it.

    `rule` is `file:line` plus, for constraint and approval rules, what the rule checks, e.g.
    `policy.csv:12`, `model.conf:8` (denied by default: no rule allows) or
    `constraints.toml:9 [loan.approve].amount <= 50000`. `stage` says which step decided:
    `request` (malformed request), `access` (Casbin rules), `constraint`, `taint` or `approval`.
    """

    effect: Effect
    rule: str
    reason: str
    policy_version: str
    stage: Stage

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"

    def to_dict(self) -> dict[str, str]:
        """A JSON-ready form, e.g. the structured error a graph receives for a denied call."""
        return {
            "effect": self.effect,
            "rule": self.rule,
            "reason": self.reason,
            "policy_version": self.policy_version,
            "stage": self.stage,
        }

    def raise_if_denied(self) -> None:
        """Raise `PolicyDenied` (naming the rule) when the effect is `deny`."""
        if self.effect == "deny":
            raise PolicyDenied(self.reason, rule=self.rule)
