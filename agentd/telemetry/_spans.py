"""Spans after the OpenTelemetry GenAI semantic conventions, plus `agentd.*` for policy.

- `invoke_agent {agent}`: one run of an agent (the worker), INTERNAL;
- `execute_tool {tool}`: one tool call (the tool gateway), INTERNAL, with the policy's answer;
- `chat {model}` / `text_completion {model}`: one model call (the LLM gateway), CLIENT, via
  `chat_span` (agentd/telemetry/_inference.py);
- `route {to}`: the router's decision to deliver a message (a PRODUCER span; the conventions
  have no GenAI operation for it).

`gen_ai.provider.name` is "agentd" on agent spans (the runtime that hosts the agent is what
serves it) and the serving engine ("vllm" by default) on chat spans. Message and tool contents
(`gen_ai.input.messages`, `gen_ai.tool.call.arguments`, ...) are opt-in
([trace.otlp].capture_content): redacted with the configured patterns as they are set (before
truncation, so a cut can never leave half a secret), and again by the exporting processor.
"""

from __future__ import annotations

import contextvars
import json
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from agentd.telemetry._setup import current_settings, tracer

__all__ = [
    "AGENT_PROVIDER",
    "SpanScope",
    "content_text",
    "current_span_ids",
    "execute_tool_span",
    "invoke_agent_span",
    "note_route_decision",
    "note_tool_decision",
    "route_span",
    "set_agent_output",
]

AGENT_PROVIDER = "agentd"
MAX_CONTENT_CHARS = 8192

# tool-call record kinds -> what the policy said (agentd.policy.decision)
_POLICY_ANSWER = {
    "tool.denied": "deny",
    "tool.approval_requested": "approval_required",
    "tool.approved": "approved",
    "tool.rejected": "rejected",
}


def content_text(value: Any) -> str | None:
    """`value` as JSON text for a content attribute, redacted and truncated; None when content
    capture is off."""
    settings, redactor = current_settings()
    if not settings.capture_content:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = redactor.redact_text(text)
    return text if len(text) <= MAX_CONTENT_CHARS else text[:MAX_CONTENT_CHARS] + "…"


def _messages(role: str, value: Any) -> str | None:
    text = content_text(value)
    if text is None:
        return None
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])


# (span id, its parent's context) of the innermost span started here: a non-recording span
# (export off) does not know its parent, and decision records name it
_parent_of: contextvars.ContextVar[tuple[int, SpanContext] | None] = contextvars.ContextVar(
    "agentd_span_parent", default=None
)


class SpanScope:
    """A started span, current from `__enter__` to `__exit__` (which ends it, marking it failed
    on an exception). One plain object instead of OpenTelemetry's three nested context
    managers: this is on every run's path."""

    __slots__ = ("_parent", "_parent_token", "_span", "_token")

    def __init__(self, span: Span, parent: SpanContext) -> None:
        self._span = span
        self._parent = parent

    def __enter__(self) -> Span:
        span = self._span
        self._token = otel_context.attach(trace.set_span_in_context(span))
        self._parent_token = _parent_of.set((span.get_span_context().span_id, self._parent))
        return span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            if exc is not None and span.is_recording():
                span.record_exception(exc)
                # the conventions' error.type: set by whoever knew better, else the class
                if "error.type" not in (getattr(span, "attributes", None) or {}):
                    span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
        finally:
            _parent_of.reset(self._parent_token)
            otel_context.detach(self._token)
            span.end()


def _current(
    name: str, kind: SpanKind, attributes: dict[str, AttributeValue], parent: Context | None
) -> SpanScope:
    """A span child of `parent` (a remote context), else of the current span."""
    parent_span = trace.get_current_span(parent)
    span = tracer().start_span(name, context=parent, kind=kind, attributes=attributes)
    return SpanScope(span, parent_span.get_span_context())


def invoke_agent_span(
    agent: str,
    *,
    conversation_id: str,
    run_id: str,
    message_id: str,
    sender: str,
    replica: str,
    parent: Context | None = None,
    agent_version: str | None = None,
    payload: Any = None,
) -> SpanScope:
    """The span of one run, current inside the block (its sends and tool calls are its
    children). `parent` is the context extracted from the inbox message's headers."""
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.provider.name": AGENT_PROVIDER,
        "gen_ai.agent.name": agent,
        "gen_ai.agent.id": agent,
        "gen_ai.conversation.id": conversation_id,
        "agentd.run.id": run_id,
        "agentd.message.id": message_id,
        "agentd.message.from": sender,
        "agentd.replica": replica,
    }
    if agent_version:
        attributes["gen_ai.agent.version"] = agent_version
    if (messages := _messages("user", payload)) is not None:
        attributes["gen_ai.input.messages"] = messages
    return _current(f"invoke_agent {agent}", SpanKind.INTERNAL, attributes, parent)


def set_agent_output(span: Span, output: Any) -> None:
    """Record a run's output on its span (only when content capture is on)."""
    if span.is_recording() and (messages := _messages("assistant", output)) is not None:
        span.set_attribute("gen_ai.output.messages", messages)


def execute_tool_span(
    tool: str,
    *,
    agent: str,
    call_id: str | None = None,
    conversation_id: str | None = None,
    run_id: str | None = None,
    parent: Context | None = None,
    args: Any = None,
) -> SpanScope:
    """The span of one tool call in the gateway; `note_tool_decision` fills in each step."""
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "gen_ai.tool.type": "function",
        "gen_ai.agent.name": agent,
    }
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    if conversation_id:
        attributes["gen_ai.conversation.id"] = conversation_id
    if run_id:
        attributes["agentd.run.id"] = run_id
    if (text := content_text(args)) is not None:
        attributes["gen_ai.tool.call.arguments"] = text
    return _current(f"execute_tool {tool}", SpanKind.INTERNAL, attributes, parent)


def note_tool_decision(
    kind: str,
    *,
    decision: str | None = None,
    rule: str | None = None,
    policy_version: str | None = None,
    reason: str | None = None,
    outputs: Any = None,
) -> None:
    """Add one step of a tool call (a decision record's kind and verdict) to the current span:
    an event per step; the policy's answer, rule and version as `agentd.policy.*`; the result
    (content capture on) and an error status for a call that ends without one."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    event: dict[str, AttributeValue] = {}
    for key, value in (("decision", decision), ("rule", rule), ("reason", reason)):
        if value is not None:
            event[f"agentd.{key}"] = value
    span.add_event(kind, event)
    answer = _POLICY_ANSWER.get(kind)
    if answer is None and kind in {"tool.executed", "tool.failed"}:
        seen = getattr(span, "attributes", None) or {}
        answer = None if "agentd.policy.decision" in seen else "allow"
    if answer is not None:
        span.set_attribute("agentd.policy.decision", answer)
    if rule is not None and kind != "tool.requested":
        span.set_attribute("agentd.policy.rule", rule)
    if policy_version:
        span.set_attribute("agentd.policy.version", policy_version)
    if decision is not None and kind != "tool.requested":
        span.set_attribute("agentd.tool.outcome", decision)
    if kind in {"tool.denied", "tool.rejected", "tool.failed"}:
        span.set_attribute("error.type", decision or kind)
        span.set_status(StatusCode.ERROR, reason)
    if kind == "tool.executed" and (text := content_text(outputs)) is not None:
        span.set_attribute("gen_ai.tool.call.result", text)


def route_span(
    sender: str,
    to: str,
    *,
    message_id: str,
    conversation_id: str,
    subject: str,
    parent: Context | None = None,
) -> SpanScope:
    """The router's span for one message (`note_route_decision` adds the verdict)."""
    attributes: dict[str, AttributeValue] = {
        "messaging.system": "nats",
        "messaging.operation.type": "send",
        "messaging.destination.name": subject,
        "messaging.message.id": message_id,
        "gen_ai.conversation.id": conversation_id,
        "agentd.message.from": sender,
        "agentd.message.to": to,
    }
    return _current(f"route {to}", SpanKind.PRODUCER, attributes, parent)


def note_route_decision(
    decision: str, *, rule: str, policy_version: str | None = None, reason: str | None = None
) -> None:
    """The router's verdict on the current `route` span (refused: an error status)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("agentd.route.decision", decision)
    span.set_attribute("agentd.policy.decision", "allow" if decision == "routed" else "deny")
    span.set_attribute("agentd.policy.rule", rule)
    if policy_version:
        span.set_attribute("agentd.policy.version", policy_version)
    if decision != "routed":
        span.set_attribute("error.type", decision)
        span.set_status(StatusCode.ERROR, reason or rule)


def current_span_ids() -> dict[str, str]:
    """`trace_id`, `span_id` and `parent_span_id` (hex) of the current span, for a decision
    record; empty when there is no valid span."""
    span = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid:
        return {}
    ids = {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }
    parent: SpanContext | None = getattr(span, "parent", None)
    known = _parent_of.get()
    if parent is None and known is not None and known[0] == context.span_id:
        parent = known[1]
    if parent is not None and parent.is_valid:
        ids["parent_span_id"] = trace.format_span_id(parent.span_id)
    return ids
