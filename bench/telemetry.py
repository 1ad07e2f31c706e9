"""What tracing costs a run: the `invoke_agent` span (and extracting its parent from the inbox
message's headers, injecting into an outgoing request) per run, with export off (the default:
recording spans, no processor), with export on (redacting + batch processor, an exporter that
discards), beside OpenTelemetry's no-op tracer as the raw baseline, in the same run.

Run: .venv/bin/python bench/telemetry.py   (prints JSON; about 10 s)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402

from agentd.telemetry import (  # noqa: E402
    TelemetrySettings,
    extract_context,
    inject_nats_headers,
    invoke_agent_span,
    setup_telemetry,
)

N = 20_000
HEADERS = {
    "Nats-Msg-Id": "m1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


class Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def one_run() -> None:
    with invoke_agent_span(
        "echo",
        conversation_id="c0ffee",
        run_id="r1",
        message_id="m1",
        sender="ctl",
        replica="echo-1",
        parent=extract_context(HEADERS),
        agent_version="v1",
        payload={"i": 1},
    ):
        inject_nats_headers()


def noop_run(tracer: trace.Tracer) -> Callable[[], None]:
    def run() -> None:
        attributes: dict[str, Any] = {"gen_ai.agent.name": "echo", "gen_ai.conversation.id": "c"}
        with tracer.start_as_current_span("invoke_agent echo", attributes=attributes):
            pass

    return run


def per_run_us(fn: Callable[[], None]) -> float:
    for _ in range(1000):
        fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(N):
            fn()
        best = min(best, (time.perf_counter() - t0) / N)
    return round(best * 1e6, 2)


def main() -> None:
    raw = per_run_us(noop_run(trace.NoOpTracer()))
    off = setup_telemetry(TelemetrySettings(), service_name="bench")
    export_off = per_run_us(one_run)
    off.shutdown()
    on = setup_telemetry(
        TelemetrySettings(export=True, redact_patterns=("sk-[A-Za-z0-9]{20,}",)),
        service_name="bench",
        exporter=Discard(),
    )
    export_on = per_run_us(one_run)
    on.shutdown()
    result = {
        "benchmark": "telemetry",
        "runs_per_sample": N,
        "noop_tracer_span_us": raw,
        "export_off_per_run_us": export_off,
        "export_on_per_run_us": export_on,
        "ratio_off_vs_noop": round(export_off / raw, 1),
        "ratio_on_vs_off": round(export_on / export_off, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
