"""W3C trace context (`traceparent`, `tracestate`) in NATS headers and HTTP headers.

Only the W3C propagator is used, whatever OpenTelemetry's global propagator is set to: agentd's
wire format does not change with an environment variable.

- NATS: `ctx.send` / `ctx.ask` / `ctx.call_tool` inject the run's context into the request's
  headers; the router keeps it on the inbox message; the worker and the tool gateway extract it
  so their spans are children of the caller's.
- HTTP: `inject_http_headers(headers)` for the LLM gateway's upstream calls, and
  `httpx_trace_hooks()` for a graph's OpenAI client:
  `AsyncOpenAI(http_client=httpx.AsyncClient(event_hooks=httpx_trace_hooks()))`. The hook runs
  in the task that makes the request, so it sees the run's current span (context variables).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "TRACE_HEADERS",
    "extract_context",
    "httpx_trace_hooks",
    "inject_http_headers",
    "inject_nats_headers",
    "trace_headers_of",
]

TRACE_HEADERS = ("traceparent", "tracestate")
_W3C = TraceContextTextMapPropagator()


def inject_nats_headers(
    headers: dict[str, str] | None = None, *, context: Context | None = None
) -> dict[str, str] | None:
    """`headers` plus the current (or given) trace context; None when there is nothing to send
    (no headers and no valid span), so a publish without a trace stays header-free."""
    carrier: dict[str, str] = dict(headers or {})
    _W3C.inject(carrier, context=context)
    return carrier or None


def inject_http_headers(
    headers: MutableMapping[str, str], *, context: Context | None = None
) -> MutableMapping[str, str]:
    """Add `traceparent` (and `tracestate`) of the current (or given) context to `headers`
    in place (a dict, aiohttp's CIMultiDict, httpx.Headers) and return them."""
    _W3C.inject(headers, context=context)
    return headers


def extract_context(headers: Mapping[str, str] | None) -> Context | None:
    """The remote context in `headers` (NATS or HTTP), or None when they carry no valid one."""
    if not headers or "traceparent" not in headers:
        return None
    context = _W3C.extract(headers)
    return context or None


def trace_headers_of(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The W3C headers among `headers`, to carry along unchanged."""
    if not headers:
        return {}
    return {k: headers[k] for k in TRACE_HEADERS if k in headers}


def httpx_trace_hooks() -> dict[str, list[Callable[[Any], Awaitable[None]]]]:
    """`event_hooks` for an `httpx.AsyncClient` that adds the current trace context to every
    request (the worker's OpenAI client reaches the LLM gateway this way)."""

    async def inject(request: Any) -> None:
        _W3C.inject(request.headers)

    return {"request": [inject]}
