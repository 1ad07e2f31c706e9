"""The replica's HTTP clients (httpx and httpx2, sync and async, as openai and ChatOpenAI use
them) add the current span's `traceparent` and the run's `baggage` to requests to the LLM
gateway only: another host, port or path gets nothing, and a caller's own header is kept."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from opentelemetry import trace

from agentd.gateway._caller_run import caller_run
from agentd.telemetry import (
    TelemetrySettings,
    instrument_http_clients,
    setup_telemetry,
    tracer,
    uninstrument_http_clients,
)

GATEWAY = "http://127.0.0.1:8471/v1"
LIBRARIES = [name for name in ("httpx", "httpx2") if importlib.util.find_spec(name)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def instrumented() -> Iterator[None]:
    telemetry = setup_telemetry(TelemetrySettings(), service_name="agentd-test")
    patched = instrument_http_clients(
        GATEWAY, baggage=lambda: {"agentd.run_id": "run-1", "agentd.conversation_id": "c 1"}
    )
    assert patched == LIBRARIES
    yield
    uninstrument_http_clients()
    telemetry.shutdown()


def transport(lib: ModuleType, seen: list[Any]) -> Any:
    def handler(request: Any) -> Any:
        seen.append(request)
        return lib.Response(200, json={})

    return lib.MockTransport(handler)


@pytest.mark.parametrize("name", LIBRARIES)
def test_sync_requests_to_the_gateway_carry_the_span_and_the_run(name: str) -> None:
    lib = importlib.import_module(name)
    seen: list[Any] = []
    with lib.Client(transport=transport(lib, seen)) as client:
        with tracer().start_as_current_span("invoke_agent a") as span:
            client.post(f"{GATEWAY}/chat/completions", json={})
            client.post("http://127.0.0.1:8471/other", json={})  # another path
            client.post("http://127.0.0.1:9999/v1/chat/completions", json={})  # another port
            client.post("https://api.example.com/v1/chat/completions", json={})
            client.post(
                f"{GATEWAY}/chat/completions", headers={"traceparent": "mine", "baggage": "b=1"}
            )
        trace_id = trace.format_trace_id(span.get_span_context().trace_id)
    first, *others, own = seen
    assert first.headers["traceparent"].split("-")[1] == trace_id
    assert caller_run(first.headers) == {"run_id": "run-1", "conversation_id": "c 1"}
    for request in others:
        assert "traceparent" not in request.headers and "baggage" not in request.headers
    assert own.headers["traceparent"] == "mine" and own.headers["baggage"] == "b=1"


@pytest.mark.anyio
@pytest.mark.parametrize("name", LIBRARIES)
async def test_async_requests_to_the_gateway_carry_the_span_and_the_run(name: str) -> None:
    lib = importlib.import_module(name)
    seen: list[Any] = []
    async with lib.AsyncClient(transport=transport(lib, seen)) as client:
        with tracer().start_as_current_span("invoke_agent a") as span:
            await client.post(f"{GATEWAY}/chat/completions", json={})
            await client.post("http://localhost:8471/v1/chat/completions", json={})
        await client.post(f"{GATEWAY}/chat/completions", json={})  # outside any span
    traced, elsewhere, outside = seen
    span_id = trace.format_span_id(span.get_span_context().span_id)
    assert traced.headers["traceparent"].split("-")[2] == span_id
    assert "traceparent" not in elsewhere.headers
    assert "traceparent" not in outside.headers  # no valid span: nothing to send


def test_the_gateway_reads_only_bounded_printable_run_ids() -> None:
    long = "r" * 201
    assert caller_run({"baggage": "agentd.run_id=r%0A1,agentd.conversation_id=c"}) == {
        "conversation_id": "c"
    }
    assert caller_run({"baggage": f"agentd.run_id={long}"}) == {}
    assert caller_run({"baggage": "x" * 9000}) == {}
    assert caller_run({"baggage": "other=1, agentd.run_id = r2 ;prop=1,agentd.run_id=r3"}) == {
        "run_id": "r2"
    }
    assert caller_run({}) == {}


@pytest.mark.anyio
@pytest.mark.parametrize("name", LIBRARIES)
async def test_chat_openai_with_its_own_http_client_carries_them_too(name: str) -> None:
    """ChatOpenAI over the openai SDK, given an httpx (or httpx2) client of the graph's own, as
    the loan example's underwriter does: the patch is on the class, so that client is covered."""
    from langchain_openai import ChatOpenAI

    lib = importlib.import_module(name)
    seen: list[Any] = []

    def handler(request: Any) -> Any:
        seen.append(request)
        message = {"role": "assistant", "content": "ok"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        body = {"id": "c", "object": "chat.completion", "model": "m", "choices": [choice]}
        return lib.Response(200, json=body)

    async with lib.AsyncClient(transport=lib.MockTransport(handler)) as http:
        llm = ChatOpenAI(model="m", base_url=GATEWAY, api_key="t", http_async_client=http)
        with tracer().start_as_current_span("invoke_agent a") as span:
            answer = await llm.ainvoke("hi")
    assert answer.content == "ok"
    [request] = seen
    assert str(request.url) == f"{GATEWAY}/chat/completions"
    span_id = trace.format_span_id(span.get_span_context().span_id)
    assert request.headers["traceparent"].split("-")[2] == span_id
    assert caller_run(request.headers)["run_id"] == "run-1"
