"""Which run an LLM call belongs to, as its caller said: for the `llm.call` record.

A replica's OpenAI clients send the run's W3C `traceparent` and a `baggage` header with
`agentd.run_id` and `agentd.conversation_id` (agentd/worker/_llm_tracing.py). The gateway's
`chat` span is a child of that context; this module reads the two ids so the record carries
them like the run's own records do, and `agentctl trace RUN` / `trace CONVERSATION` (which find
records by run and conversation id) show the call under the run's `invoke_agent` span.

The ids are the caller's claim, as a tool call's `run_id` is: the record's `agent` and
`replica` come from the bearer token, never from a header, so a replica can only file its own
calls under a run, not speak for another agent. The header is bounded and every value checked;
a bad entry is ignored (the call still goes through, its record just lacks the id).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.context import Context

__all__ = ["MAX_BAGGAGE_BYTES", "caller_run", "remote_parent_ids"]

MAX_BAGGAGE_BYTES = 8192  # the W3C Baggage limit
_KEYS = {"agentd.run_id": "run_id", "agentd.conversation_id": "conversation_id"}
MAX_ID_CHARS = 200  # as a message's conversation id (agentd/bus/_message.py)


def caller_run(headers: Mapping[str, str]) -> dict[str, str]:
    """`run_id` / `conversation_id` named in the request's `baggage` header (absent if not)."""
    text = headers.get("baggage", "")
    if not text or len(text) > MAX_BAGGAGE_BYTES:
        return {}
    found: dict[str, str] = {}
    for member in text.split(","):
        key, sep, rest = member.partition("=")
        field = _KEYS.get(unquote(key.strip()))
        if not sep or field is None or field in found:
            continue
        value = unquote(rest.split(";", 1)[0].strip())
        if 0 < len(value) <= MAX_ID_CHARS and value.isprintable():
            found[field] = value
    return found


def remote_parent_ids(parent: Context | None) -> dict[str, str]:
    """`trace_id` / `parent_span_id` of the caller's span, for a record made outside a span of
    the gateway's own (a call refused before it went upstream)."""
    if parent is None:
        return {}
    context = trace.get_current_span(parent).get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "parent_span_id": trace.format_span_id(context.span_id),
    }
