"""OpenTelemetry for agentd: GenAI spans, W3C trace context across NATS and HTTP, OTLP export.

A concept of its own, beside `agentd.trace` (the durable decision log): spans are what an
operator's tracing backend shows, records are what an auditor verifies; records carry the span
ids, so one leads to the other. Every process calls `setup_telemetry` once (the daemon from
[trace.otlp], a replica from its environment) and `Telemetry.shutdown()` on exit.

For the LLM gateway: `extract_context(request.headers)` -> `with chat_span(model, parent=...)
as chat:` -> `inject_http_headers(upstream_headers)` -> `chat.set_response(...)`.
"""

from agentd.telemetry._http_clients import instrument_http_clients, uninstrument_http_clients
from agentd.telemetry._inference import (
    ChatSpan,
    InferenceOperation,
    chat_span,
    request_attributes,
)
from agentd.telemetry._propagation import (
    TRACE_HEADERS,
    extract_context,
    httpx_trace_hooks,
    inject_http_headers,
    inject_nats_headers,
    trace_headers_of,
)
from agentd.telemetry._redact import RedactingSpanProcessor
from agentd.telemetry._settings import TelemetrySettings, traces_url
from agentd.telemetry._setup import Telemetry, current_settings, setup_telemetry, tracer
from agentd.telemetry._spans import (
    AGENT_PROVIDER,
    SpanScope,
    content_text,
    current_span_ids,
    execute_tool_span,
    invoke_agent_span,
    note_route_decision,
    note_tool_decision,
    route_span,
    set_agent_output,
)

__all__ = [
    # setup
    "Telemetry",
    "TelemetrySettings",
    "current_settings",
    "setup_telemetry",
    "traces_url",
    "tracer",
    "RedactingSpanProcessor",
    # spans
    "AGENT_PROVIDER",
    "ChatSpan",
    "InferenceOperation",
    "SpanScope",
    "chat_span",
    "request_attributes",
    "content_text",
    "current_span_ids",
    "execute_tool_span",
    "invoke_agent_span",
    "note_route_decision",
    "note_tool_decision",
    "route_span",
    "set_agent_output",
    # propagation
    "TRACE_HEADERS",
    "extract_context",
    "httpx_trace_hooks",
    "inject_http_headers",
    "instrument_http_clients",
    "uninstrument_http_clients",
    "inject_nats_headers",
    "trace_headers_of",
]
