"""W3C trace context into a model call, end to end: the LLM gateway's `chat {model}` span
injects `traceparent` into its HTTP request, and a real vLLM server (CPU build, tiny model),
started with its own OTLP export to the same receiver, makes its `llm_request` span a child of
ours. Both exports are decoded from the protobuf by the test's receiver."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agentd.inference import build_tiny_model
from agentd.telemetry import TelemetrySettings, chat_span, inject_http_headers, setup_telemetry
from tests.inference.vllm_server import VllmServer, vllm_python
from tests.telemetry.otlp_receiver import otlp_receiver

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not vllm_python().exists(),
        reason=f"no vLLM environment at {vllm_python()} (set AGENTD_VLLM_PYTHON)",
    ),
]


def test_vllms_request_span_is_a_child_of_the_chat_span(tmp_path: Path) -> None:
    model_dir = build_tiny_model(tmp_path / "model")
    with otlp_receiver() as receiver, pytest.MonkeyPatch.context() as env:
        # vLLM reads these itself; its default protocol is gRPC
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        server = VllmServer.start(
            model_dir, tmp_path, extra_args=["--otlp-traces-endpoint", receiver.url]
        )
        try:
            settings = TelemetrySettings(export=True, endpoint=receiver.url, export_interval_s=0.2)
            telemetry = setup_telemetry(settings, service_name="agentd")
            try:
                with chat_span("tiny", agent="underwriter", pool="main", max_tokens=8) as chat:
                    response = httpx.post(
                        f"{server.base_url}/v1/chat/completions",
                        headers=inject_http_headers({}),
                        json={
                            "model": "tiny",
                            "messages": [{"role": "user", "content": "Score applicant A-1001"}],
                            "max_tokens": 8,
                            "temperature": 0,
                        },
                        timeout=60,
                    )
                    assert response.status_code == 200, response.text
                    body = response.json()
                    chat.set_response(
                        model=body["model"],
                        response_id=body["id"],
                        input_tokens=body["usage"]["prompt_tokens"],
                        output_tokens=body["usage"]["completion_tokens"],
                        finish_reasons=[c["finish_reason"] for c in body["choices"]],
                    )
            finally:
                telemetry.shutdown()
            spans = receiver.wait_for(
                lambda got: {"chat tiny", "llm_request"} <= {s.name for s in got}, 60
            )
        finally:
            server.stop()
    (ours,) = [s for s in spans if s.name == "chat tiny"]
    (engine,) = [s for s in spans if s.name == "llm_request"]
    assert engine.trace_id == ours.trace_id
    assert engine.parent_span_id == ours.span_id
    assert ours.kind == "CLIENT" and ours.resource["service.name"] == "agentd"
    assert ours.attributes["gen_ai.request.model"] == "tiny"
    assert ours.attributes["gen_ai.response.model"] == "tiny"
    assert ours.attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"] > 0
    assert engine.attributes["gen_ai.usage.prompt_tokens"] == body["usage"]["prompt_tokens"]
