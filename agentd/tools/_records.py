"""Decision records of tool calls: one per step, each naming the call it is about."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentd.telemetry import current_span_ids, note_tool_decision
from agentd.tools._protocol import ErrorCode, ToolRefusal
from agentd.trace import new_record_id

if TYPE_CHECKING:
    from agentd.tools._taint import Taint

__all__ = ["CallRecorder", "ToolCall"]

log = logging.getLogger("agentd.tools")


@dataclass(frozen=True)
class ToolCall:
    """One request as the gateway received it; `agent` is the subject's (the caller)."""

    agent: str
    tool: str
    args: dict[str, Any]
    message_id: str
    call_id: str
    run_id: str | None
    conversation_id: str | None
    trace_id: str | None
    taint: Taint | None = None
    """The daemon's own answer: has this run received untrusted content, and from which record."""
    untrusted: bool = False
    """The tool is declared (or configured) untrusted: its result taints the run."""
    result_record: str = field(default_factory=new_record_id)
    """The id of this call's `tool.executed` record (an untrusted result taints by it)."""


class CallRecorder:
    """Writes `tool.*` records through the daemon's `record(kind, **fields)`; never raises."""

    def __init__(self, sink: Callable[..., None]) -> None:
        self._sink = sink

    def deny(
        self,
        call: ToolCall,
        code: ErrorCode,
        message: str,
        rule: str,
        *,
        policy_version: str | None = None,
        retry_after_s: float | None = None,
        retryable: bool = False,
    ) -> ToolRefusal:
        """Record a `tool.denied` step and return the refusal to raise."""
        self.record(
            "tool.denied",
            call,
            decision=code,
            rule=rule,
            reason=message,
            policy_version=policy_version,
            retry_after_s=retry_after_s,
        )
        return ToolRefusal(
            code, message, rule=rule, retry_after_s=retry_after_s, retryable=retryable
        )

    def record(
        self, kind: str, call: ToolCall, *, policy_version: str | None = None, **fields: Any
    ) -> None:
        fields["tainted"] = call.taint is not None
        if call.taint is not None:
            fields.update(call.taint.fields())
        if kind == "tool.executed":
            fields["id"] = call.result_record
            if call.untrusted:
                fields["trust"] = "untrusted"
        self.emit(
            kind,
            agent=call.agent,
            run_id=call.run_id,
            conversation_id=call.conversation_id,
            trace_id=call.trace_id,
            tool=call.tool,
            call_id=call.call_id,
            message_id=call.message_id,
            lineage={"policy_version": policy_version} if policy_version else None,
            **fields,
        )

    def emit(self, kind: str, **fields: Any) -> None:
        """Record one step; it also becomes an event (and the policy's answer attributes) of
        the call's `execute_tool` span, whose ids the record carries."""
        lineage = fields.get("lineage") or {}
        try:
            note_tool_decision(
                kind,
                decision=fields.get("decision"),
                rule=fields.get("rule"),
                policy_version=lineage.get("policy_version"),
                reason=fields.get("reason"),
                outputs=fields.get("outputs"),
            )
        except Exception:
            log.exception("adding a tool decision (%s) to its span failed", kind)
        fields.update(current_span_ids())
        try:
            self._sink(kind, **fields)
        except Exception:
            log.exception("recording a tool decision (%s) failed", kind)
