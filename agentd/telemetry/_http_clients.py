"""Trace context on an unmodified client's HTTP requests to one URL (the LLM gateway).

A graph written as the LangChain docs teach builds `ChatOpenAI(...)` or `openai.OpenAI()` and
never hands agentd a hook. Both send every request through `Client.send` /
`AsyncClient.send` of httpx (openai < 3) or httpx2 (openai >= 3, the same API), so the worker
patches those four methods once, at start, before the graph module is imported
(`instrument_http_clients`). A request whose URL lies under the target URL gets:

- `traceparent` / `tracestate` of the current span (the run's `invoke_agent`, or a span the
  graph opened inside it): context variables, so the right run in a replica running several;
- `baggage` with the entries `baggage()` returns (the worker's run and conversation ids), so
  the gateway's `llm.call` record joins the run's records (`agentctl trace RUN`).

Any other URL is left alone: a replica's trace and run ids never reach a third party. Headers
the caller set itself are kept. Patching the class, not an instance, covers clients built
before and after, including those openai builds internally.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["UrlPrefix", "instrument_http_clients", "uninstrument_http_clients"]

_W3C = TraceContextTextMapPropagator()
_LIBRARIES = ("httpx", "httpx2")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# (module, class name, method name) -> the original method, while patched
_originals: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True)
class UrlPrefix:
    """Scheme, host, port and path prefix of the URL requests are traced to."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> UrlPrefix:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL with a host")
        port = parts.port or _DEFAULT_PORTS[scheme]
        return cls(scheme, parts.hostname.lower(), port, parts.path.rstrip("/"))

    def covers(self, url: Any) -> bool:
        """Whether an httpx(2) `URL` lies under this prefix."""
        scheme = str(url.scheme).lower()
        port = url.port or _DEFAULT_PORTS.get(scheme)
        path = str(url.path)
        return (
            scheme == self.scheme
            and str(url.host).lower() == self.host
            and port == self.port
            and (path == self.path or path.startswith(self.path + "/"))
        )


def instrument_http_clients(
    url: str, *, baggage: Callable[[], Mapping[str, str]] | None = None
) -> list[str]:
    """Make httpx and httpx2 clients send trace context (and `baggage()`) to requests under
    `url`; returns the libraries patched (those installed). Calling it again retargets."""
    prefix = UrlPrefix.parse(url)
    patched: list[str] = []
    for name in _LIBRARIES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        _patch(name, module.Client, prefix, baggage, is_async=False)
        _patch(name, module.AsyncClient, prefix, baggage, is_async=True)
        patched.append(name)
    return patched


def uninstrument_http_clients() -> None:
    """Restore the original methods (tests)."""
    for (name, cls_name), original in list(_originals.items()):
        getattr(importlib.import_module(name), cls_name).send = original
        del _originals[(name, cls_name)]


def _add_context(
    request: Any, prefix: UrlPrefix, baggage: Callable[[], Mapping[str, str]] | None
) -> None:
    if not prefix.covers(request.url):
        return
    headers = request.headers
    if "traceparent" not in headers:
        _W3C.inject(headers)
    if baggage is not None and "baggage" not in headers:
        entries = baggage()
        if entries:
            headers["baggage"] = ",".join(
                f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in entries.items()
            )


def _patch(
    name: str,
    cls: Any,
    prefix: UrlPrefix,
    baggage: Callable[[], Mapping[str, str]] | None,
    *,
    is_async: bool,
) -> None:
    key = (name, cls.__name__)
    original = _originals.setdefault(key, cls.send)

    if is_async:

        async def send_async(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            _add_context(request, prefix, baggage)
            return await original(self, request, *args, **kwargs)

        cls.send = send_async
    else:

        def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            _add_context(request, prefix, baggage)
            return original(self, request, *args, **kwargs)

        cls.send = send
