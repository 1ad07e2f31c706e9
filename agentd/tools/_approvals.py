"""Calls parked for human approval, and the operator's answer to each.

A parked call waits in the gateway (its run stays in flight: the worker's request is open and
its inbox message keeps getting in-progress acks) until an operator approves or denies it, or
until `approval_timeout_s` passes, which denies it. What the operator approves is an
`ApprovalBinding`: this caller, this tool, these exact arguments (their digest), this policy
version, until an expiry; it is checked again when the answer comes, and it is used once, by the
call that asked for it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from agentd.policy import ApprovalBinding, Request

if TYPE_CHECKING:
    from agentd.tools._taint import Taint

__all__ = ["ApprovalBook", "ApprovalOutcome", "PendingApproval"]


@dataclass(frozen=True)
class ApprovalOutcome:
    """The answer to a parked call: granted or not, by whom (None: the gateway), and why."""

    granted: bool
    operator: str | None
    reason: str
    rule: str
    decided_at: float = field(default_factory=time.time)


@dataclass
class PendingApproval:
    """One call waiting for an operator."""

    id: str
    agent: str
    tool: str
    args: dict[str, Any]
    args_digest: str
    call_id: str
    run_id: str | None
    message_id: str
    conversation_id: str | None
    trace_id: str | None
    policy_version: str
    rule: str
    reason: str
    requested_at: float
    expires_at: float
    """When the call is denied for want of an answer (the binding may last longer)."""
    request: Request
    binding: ApprovalBinding
    outcome: ApprovalOutcome | None = None
    answered: anyio.Event = field(default_factory=anyio.Event)
    taint: Taint | None = None
    """The run received untrusted content: the record that delivered it."""

    def to_dict(self) -> dict[str, Any]:
        """What `agentctl approvals` shows."""
        return {
            "id": self.id,
            "agent": self.agent,
            "tool": self.tool,
            "args": self.args,
            "args_digest": self.args_digest,
            "call_id": self.call_id,
            "run_id": self.run_id,
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "trace_id": self.trace_id,
            "policy_version": self.policy_version,
            "rule": self.rule,
            "reason": self.reason,
            "requested_at": self.requested_at,
            "expires_at": self.expires_at,
            "tainted": self.taint is not None,
            **(self.taint.fields() if self.taint is not None else {}),
        }


def new_approval_id() -> str:
    """Short enough to type in `agentctl approve ID`, random enough not to guess."""
    return "ap-" + uuid.uuid4().hex[:12]


class ApprovalBook:
    """The calls waiting for an answer, by approval id."""

    def __init__(self) -> None:
        self._waiting: dict[str, PendingApproval] = {}

    def add(self, pending: PendingApproval) -> None:
        self._waiting[pending.id] = pending

    def get(self, approval_id: str) -> PendingApproval | None:
        return self._waiting.get(approval_id)

    def pending(self) -> list[PendingApproval]:
        return sorted(self._waiting.values(), key=lambda p: p.requested_at)

    def answer(self, pending: PendingApproval, outcome: ApprovalOutcome) -> bool:
        """Settle a parked call once; False when it was already settled."""
        if pending.outcome is not None:
            return False
        pending.outcome = outcome
        self._waiting.pop(pending.id, None)
        pending.answered.set()
        return True

    async def wait(self, pending: PendingApproval) -> ApprovalOutcome:
        """Wait for the answer; past `expires_at` the call is denied by "approval timeout"."""
        with anyio.move_on_after(max(pending.expires_at - time.time(), 0)):
            await pending.answered.wait()
        timeout = ApprovalOutcome(
            False,
            None,
            f"no operator answered within {pending.expires_at - pending.requested_at:g}s",
            "approval timeout",
        )
        self.answer(pending, timeout)  # a no-op when an answer came first
        assert pending.outcome is not None
        return pending.outcome
