"""What tracing adds to one echo round trip, as the daemon and the worker do it: the router's
`route` span (its decision noted, the context injected into the inbox message, the record's
ids read) and the worker's `invoke_agent` span (its parent extracted from the message's
headers, the output noted). With export off (the default: sampled out, non-recording spans that
keep ids) and on (recorded, redacting + batch processor, an exporter that discards), beside
OpenTelemetry's no-op tracer making two spans as the raw baseline, in the same run.

Run: .venv/bin/python bench/telemetry.py [--smoke]   (prints JSON; about 15 s)
"""

from __future__ import annotations

import argparse
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
    current_span_ids,
    extract_context,
    inject_nats_headers,
    invoke_agent_span,
    note_route_decision,
    route_span,
    set_agent_output,
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


def echo_trip() -> None:
    # the router, for a message from agentctl (no context yet)
    with route_span(
        "ctl", "echo", message_id="m1", conversation_id="c0ffee", subject="agentd.in.echo"
    ):
        carried = inject_nats_headers() or {}
        note_route_decision("routed", rule="allow-all", policy_version="none")
        current_span_ids()
    # the worker
    with invoke_agent_span(
        "echo",
        conversation_id="c0ffee",
        run_id="r1",
        message_id="m1",
        sender="ctl",
        replica="echo-1",
        parent=extract_context({**HEADERS, **carried}),
        agent_version="v1",
        payload={"i": 1},
    ) as span:
        set_agent_output(span, {"i": 1})


def noop_trip(tracer: trace.Tracer) -> Callable[[], None]:
    def run() -> None:
        attributes: dict[str, Any] = {"gen_ai.agent.name": "echo", "gen_ai.conversation.id": "c"}
        with tracer.start_as_current_span("route echo", attributes=attributes):
            pass
        with tracer.start_as_current_span("invoke_agent echo", attributes=attributes):
            pass

    return run


def per_run_us(fn: Callable[[], None], runs: int) -> float:
    for _ in range(runs // 20):
        fn()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(runs):
            fn()
        best = min(best, (time.perf_counter() - t0) / runs)
    return round(best * 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="200 runs per sample (tests)")
    runs = 200 if parser.parse_args().smoke else N
    raw = per_run_us(noop_trip(trace.NoOpTracer()), runs)
    off = setup_telemetry(TelemetrySettings(), service_name="bench")
    export_off = per_run_us(echo_trip, runs)
    off.shutdown()
    on = setup_telemetry(
        TelemetrySettings(export=True, redact_patterns=("sk-[A-Za-z0-9]{20,}",)),
        service_name="bench",
        exporter=Discard(),
    )
    export_on = per_run_us(echo_trip, runs)
    on.shutdown()
    result = {
        "benchmark": "telemetry",
        "runs_per_sample": runs,
        "noop_tracer_two_spans_us": raw,
        "export_off_per_echo_trip_us": export_off,
        "export_on_per_echo_trip_us": export_on,
        "ratio_off_vs_noop": round(export_off / raw, 1),
        "ratio_on_vs_off": round(export_on / export_off, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
