from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentd.telemetry import Telemetry, TelemetrySettings, setup_telemetry

SECRET = "sk-Zq8r4LmN2xYt7VbW1cKd9PfH"
PATTERNS = ("sk-[A-Za-z0-9]{20,}",)

Traced = tuple[Telemetry, InMemorySpanExporter]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def traced() -> Iterator[Callable[..., Traced]]:
    """Set up this process's telemetry exporting to memory (through the redacting processor
    and a batch processor, as in production); flush with `telemetry.force_flush()`."""
    made: list[Telemetry] = []

    def make(**changes: object) -> Traced:
        exporter = InMemorySpanExporter()
        settings = TelemetrySettings(export=True, redact_patterns=PATTERNS, **changes)  # type: ignore[arg-type]
        telemetry = setup_telemetry(settings, service_name="agentd-test", exporter=exporter)
        made.append(telemetry)
        return telemetry, exporter

    yield make
    for telemetry in made:
        telemetry.shutdown()
