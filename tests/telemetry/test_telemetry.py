"""Telemetry in one process: settings, the redacting processor, W3C propagation over NATS
headers and HTTP (a real aiohttp server), and the GenAI span helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentd.config import TraceConfig, load_config
from agentd.errors import ConfigError
from agentd.telemetry import (
    RedactingSpanProcessor,
    TelemetrySettings,
    chat_span,
    current_span_ids,
    execute_tool_span,
    extract_context,
    httpx_trace_hooks,
    inject_http_headers,
    inject_nats_headers,
    invoke_agent_span,
    note_tool_decision,
    setup_telemetry,
    trace_headers_of,
    tracer,
)
from agentd.trace import Redactor
from tests.telemetry.conftest import PATTERNS, SECRET, Traced

# settings


def test_export_is_off_by_default() -> None:
    settings = TelemetrySettings.from_config(TraceConfig())
    assert settings.export is False
    assert TelemetrySettings.from_env({}).export is False
    assert settings.to_env()["OTEL_TRACES_EXPORTER"] == "none"


def test_settings_reach_a_worker_through_its_environment_unchanged() -> None:
    config = TraceConfig.model_validate(
        {
            "redact_patterns": list(PATTERNS),
            "otlp": {
                "enabled": True,
                "endpoint": "https://collector.example:4318/",
                "headers": {"authorization": "Bearer a=b,c", "x-tenant": "loans"},
                "timeout_s": 2.5,
                "export_interval_s": 0.25,
                "capture_content": True,
            },
        }
    )
    settings = TelemetrySettings.from_config(config)
    assert settings.endpoint == "https://collector.example:4318/v1/traces"
    assert TelemetrySettings.from_env(settings.to_env()) == settings


def test_grpc_and_bad_endpoints_are_rejected_saying_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "agentd.toml"
    path.write_text('[trace.otlp]\nprotocol = "grpc"\nendpoint = "collector:4317"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "trace.otlp.protocol" in text and "http/protobuf" in text
    assert "trace.otlp.endpoint" in text


def test_a_bad_worker_environment_names_every_bad_variable() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "soon",
        "AGENTD_TRACE_REDACT_PATTERNS": '["("]',
    }
    with pytest.raises(ConfigError) as caught:
        TelemetrySettings.from_env(env)
    assert len(caught.value.problems) == 3


# redaction


def _span_with_secrets(provider: TracerProvider) -> None:
    with provider.get_tracer("t").start_as_current_span(f"execute_tool {SECRET}") as span:
        span.set_attribute("gen_ai.tool.call.arguments", json.dumps({"key": SECRET}))
        span.set_attribute("agentd.list", ["plain", f"x {SECRET} y"])
        span.set_attribute("gen_ai.usage.input_tokens", 7)
        span.add_event("tool.denied", {"agentd.reason": f"token {SECRET} refused"})
        span.record_exception(ValueError(f"bad token {SECRET}"))
        span.set_status(trace.StatusCode.ERROR, f"failed with {SECRET}")


def test_the_processor_redacts_every_string_a_span_carries_before_export() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(
        RedactingSpanProcessor(SimpleSpanProcessor(exporter), Redactor(PATTERNS))
    )
    _span_with_secrets(provider)
    with provider.get_tracer("t").start_as_current_span("clean") as clean:
        clean.set_attribute("k", "v")
    provider.shutdown()
    redacted, passed = exporter.get_finished_spans()
    assert SECRET not in repr(_dump(redacted))
    assert redacted.name == "execute_tool [REDACTED]"
    assert redacted.attributes is not None
    assert redacted.attributes["gen_ai.tool.call.arguments"] == '{"key": "[REDACTED]"}'
    assert redacted.attributes["agentd.list"] == ("plain", "x [REDACTED] y")
    assert redacted.attributes["gen_ai.usage.input_tokens"] == 7
    assert redacted.status.description == "failed with [REDACTED]"
    assert [e.name for e in redacted.events] == ["tool.denied", "exception"]
    assert redacted.context == redacted.context and redacted.parent is None
    assert passed.name == "clean" and passed.attributes == {"k": "v"}


def test_a_clean_span_is_passed_on_as_it_is() -> None:
    processor = RedactingSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()), Redactor())
    span = ReadableSpan("clean", attributes={"k": "v"})
    assert processor.redact(span) is span


def _dump(span: ReadableSpan) -> Any:
    return (
        span.name,
        dict(span.attributes or {}),
        [(e.name, dict(e.attributes or {})) for e in span.events],
        span.status.description,
    )


# propagation


def test_nats_headers_carry_the_current_span_to_the_next_process(
    traced: Callable[..., Traced],
) -> None:
    telemetry, exporter = traced()
    assert inject_nats_headers() is None  # no span: the publish stays header-free
    with tracer().start_as_current_span("caller") as caller:
        headers = inject_nats_headers({"Nats-Msg-Id": "m1"})
    assert headers is not None and headers["Nats-Msg-Id"] == "m1"
    caller_ids = caller.get_span_context()
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert (trace_id, span_id) == (f"{caller_ids.trace_id:032x}", f"{caller_ids.span_id:016x}")
    assert int(flags, 16) & 1  # sampled
    assert trace_headers_of({**headers, "other": "x"}) == {"traceparent": headers["traceparent"]}
    with invoke_agent_span(
        "b",
        conversation_id="conv",
        run_id="r1",
        message_id="m1",
        sender="a",
        replica="b-1",
        parent=extract_context(headers),
    ):
        ids = current_span_ids()
    assert ids["trace_id"] == f"{caller_ids.trace_id:032x}"
    assert ids["parent_span_id"] == f"{caller_ids.span_id:016x}"
    assert extract_context({"traceparent": "00-garbage"}) is None
    assert extract_context(None) is None and current_span_ids() == {}
    telemetry.force_flush()
    run = [s for s in exporter.get_finished_spans() if s.name == "invoke_agent b"][0]
    assert run.attributes is not None
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.conversation.id"] == "conv"
    assert "gen_ai.input.messages" not in run.attributes  # content capture is off


class Upstream:
    """A real HTTP server that keeps the headers of each request it gets."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        return web.json_response({"model": "tiny", "usage": {"prompt_tokens": 3}})


async def _serve(upstream: Upstream) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/v1/chat/completions"


@pytest.mark.anyio
async def test_an_llm_call_is_a_chat_span_between_the_run_and_the_upstream_request(
    traced: Callable[..., Traced],
) -> None:
    telemetry, exporter = traced(capture_content=True)
    upstream = Upstream()
    runner, url = await _serve(upstream)
    try:
        # the agent's OpenAI client: httpx with the trace hook, inside its run's span
        async with httpx.AsyncClient(event_hooks=httpx_trace_hooks()) as client:
            with tracer().start_as_current_span("invoke_agent a") as run:
                await client.post(url, json={"model": "tiny"})
        incoming = upstream.seen[0]
        # the gateway: continue the agent's trace, call upstream inside `chat {model}`
        with chat_span(
            "tiny",
            agent="a",
            pool="main",
            parent=extract_context(incoming),
            messages=[{"role": "user", "content": f"my key is {SECRET}"}],
        ) as chat:
            headers = inject_http_headers({"content-type": "application/json"})
            async with httpx.AsyncClient() as client:
                await client.post(url, headers=headers, json={"model": "tiny"})
            chat.set_response(
                model="tiny-rev1", input_tokens=3, output_tokens=5, finish_reasons=["stop"]
            )
    finally:
        await runner.cleanup()
    telemetry.force_flush()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "chat tiny"]
    run_ids, chat_ids = run.get_span_context(), span.context
    assert chat_ids is not None
    assert incoming["traceparent"].split("-")[2] == f"{run_ids.span_id:016x}"
    assert span.parent is not None and span.parent.span_id == run_ids.span_id
    assert upstream.seen[1]["traceparent"].split("-")[2] == f"{chat_ids.span_id:016x}"
    assert span.kind == trace.SpanKind.CLIENT
    assert span.attributes is not None
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert span.attributes["gen_ai.request.model"] == "tiny"
    assert span.attributes["gen_ai.response.model"] == "tiny-rev1"
    assert span.attributes["gen_ai.usage.input_tokens"] == 3
    assert span.attributes["gen_ai.usage.output_tokens"] == 5
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert span.attributes["gen_ai.provider.name"] == "vllm"
    assert SECRET not in str(span.attributes["gen_ai.input.messages"])
    assert "[REDACTED]" in str(span.attributes["gen_ai.input.messages"])


def test_tool_steps_become_events_and_policy_attributes(traced: Callable[..., Traced]) -> None:
    telemetry, exporter = traced()
    with execute_tool_span("loan.approve", agent="underwriter", call_id="c1"):
        note_tool_decision("tool.requested")
        note_tool_decision(
            "tool.approval_requested",
            decision="approval_required",
            rule="constraints.toml:52",
            policy_version="v7",
        )
        note_tool_decision("tool.approved", decision="approve", rule="operator:alice")
        note_tool_decision("tool.executed", decision="ok", rule="constraints.toml:52")
    with execute_tool_span("sql.query", agent="compliance"):
        note_tool_decision("tool.denied", decision="rate_limited", rule="limits.toml:3")
    telemetry.force_flush()
    approved, denied = exporter.get_finished_spans()
    assert [e.name for e in approved.events] == [
        "tool.requested",
        "tool.approval_requested",
        "tool.approved",
        "tool.executed",
    ]
    assert approved.attributes is not None and denied.attributes is not None
    assert approved.attributes["agentd.policy.decision"] == "approved"  # kept past executed
    assert approved.attributes["agentd.policy.version"] == "v7"
    assert approved.attributes["agentd.tool.outcome"] == "ok"
    assert approved.status.status_code == trace.StatusCode.UNSET
    assert denied.attributes["agentd.policy.decision"] == "deny"
    assert denied.attributes["error.type"] == "rate_limited"
    assert denied.status.status_code == trace.StatusCode.ERROR


def test_with_export_off_spans_are_not_recorded_but_ids_and_parents_flow() -> None:
    telemetry = setup_telemetry(TelemetrySettings(), service_name="agentd-test")
    try:
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with execute_tool_span(
            "credit.score", agent="a", parent=extract_context({"traceparent": parent})
        ) as span:
            ids = current_span_ids()
            headers = inject_nats_headers()
        assert not span.is_recording()
        assert ids["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
        assert ids["parent_span_id"] == "b7ad6b7169203331"
        assert ids["span_id"] != ids["parent_span_id"] and len(ids["span_id"]) == 16
        assert headers is not None and ids["span_id"] in headers["traceparent"]
    finally:
        telemetry.shutdown()


def test_an_anchored_pattern_is_checked_against_each_string_alone() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    redactor = Redactor([r"^acct-[0-9]+$"])
    provider.add_span_processor(RedactingSpanProcessor(SimpleSpanProcessor(exporter), redactor))
    with provider.get_tracer("t").start_as_current_span("call") as span:
        span.set_attribute("payee", "acct-1001")  # the whole value: a secret
        span.set_attribute("note", "paid to acct-1001")  # not anchored at its start: kept
    provider.shutdown()
    (exported,) = exporter.get_finished_spans()
    assert exported.attributes == {"payee": "[REDACTED]", "note": "paid to acct-1001"}
