"""One tracer provider per process: the daemon's (`service.name=agentd`) and each replica's
(`agentd-worker`).

Spans are always made, export or not: their ids go into decision records and travel in
`traceparent` headers, so a trace is whole in the decision log even when nothing is exported.
With export off the sampler records nothing: a span is a non-recording one that still gets its
own ids and carries its parent's trace (bench/telemetry.py: about a third of a recording span's
cost, and attributes are never built). With export on, spans are recorded (parent-based: a
caller's "not sampled" is obeyed) and go through the `RedactingSpanProcessor` into a
`BatchSpanProcessor` and the OTLP/HTTP exporter; `Telemetry.shutdown()` flushes them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

from agentd.telemetry._redact import RedactingSpanProcessor
from agentd.telemetry._settings import TelemetrySettings
from agentd.trace import Redactor

__all__ = ["Telemetry", "current_settings", "setup_telemetry", "tracer"]

log = logging.getLogger("agentd.telemetry")

INSTRUMENTATION_NAME = "agentd"

_lock = threading.Lock()
# Before `setup_telemetry`, the global API's proxy tracer: non-recording spans that still
# carry an incoming context through, so unconfigured code (unit tests, tools) works unchanged.
_tracer: trace.Tracer = trace.get_tracer(INSTRUMENTATION_NAME)
_settings = TelemetrySettings()
_redactor = Redactor()


def tracer() -> trace.Tracer:
    """The tracer of the process's current `Telemetry` (see `setup_telemetry`)."""
    return _tracer


def current_settings() -> tuple[TelemetrySettings, Redactor]:
    """The active settings and the redactor built from their patterns."""
    return _settings, _redactor


@dataclass
class Telemetry:
    """A configured tracer provider; `shutdown()` exports what is buffered (repeatable)."""

    provider: TracerProvider
    settings: TelemetrySettings
    tracer: trace.Tracer

    def shutdown(self) -> None:
        global _tracer
        try:
            self.provider.shutdown()
        except Exception:  # an unreachable collector must not fail the process's exit
            log.exception("flushing spans on shutdown failed")
        with _lock:
            if _tracer is self.tracer:
                _tracer = trace.get_tracer(INSTRUMENTATION_NAME)

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))


def setup_telemetry(
    settings: TelemetrySettings,
    *,
    service_name: str,
    attributes: Mapping[str, str] | None = None,
    exporter: SpanExporter | None = None,
) -> Telemetry:
    """Make this process's tracer provider and make it the one `tracer()` returns.

    `attributes` join the resource (e.g. `service.instance.id`, `gen_ai.agent.name`).
    `exporter` replaces the OTLP/HTTP exporter (tests use an in-memory one); it is used only
    when `settings.export` is on. The first provider also becomes OpenTelemetry's global one,
    so third-party instrumentation joins the same traces.
    """
    global _tracer, _settings, _redactor
    resource = Resource.create({"service.name": service_name, **(attributes or {})})
    # export on: a caller that chose not to sample is obeyed, every root is sampled
    sampler = ParentBased(TraceIdRatioBased(1.0)) if settings.export else ALWAYS_OFF
    provider = TracerProvider(resource=resource, sampler=sampler)
    redactor = Redactor(settings.redact_patterns)
    if settings.export:
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(
                endpoint=settings.endpoint,
                headers=dict(settings.headers),
                timeout=settings.timeout_s,
            )
        batch = BatchSpanProcessor(
            exporter,
            schedule_delay_millis=max(1, round(settings.export_interval_s * 1000)),
            export_timeout_millis=round(settings.timeout_s * 1000),
        )
        provider.add_span_processor(RedactingSpanProcessor(batch, redactor))
        log.info("exporting spans over OTLP/HTTP to %s", settings.endpoint)
    ours = provider.get_tracer(INSTRUMENTATION_NAME)
    with _lock:
        _tracer = ours
        _settings, _redactor = settings, redactor
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
    return Telemetry(provider, settings, ours)
