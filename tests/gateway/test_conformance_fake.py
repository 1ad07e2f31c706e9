"""What OpenAI clients and OpenTelemetry backends expect of the gateway, against fake replicas:
the stream a caller asked for and nothing more, OpenAI-shaped errors for everything the gateway
answers itself, a permanent refusal that no SDK retries, and spans after the GenAI semantic
conventions for every call, refused ones included.

The same behaviour through the official clients and real vLLM: test_conformance_openai.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agentd.gateway import ReplicaEndpoint, StaticUpstreams
from agentd.gateway._sse import UsageStripper
from agentd.telemetry import TelemetrySettings, setup_telemetry
from tests.gateway.fake_openai import FakeReplica, fake_replicas
from tests.gateway.support import budget, running_gateway

pytestmark = pytest.mark.anyio

CHAT = {"model": "main", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@dataclass(frozen=True)
class Answer:
    allowed: bool
    rule: str
    reason: str = ""
    policy_version: str = ""


def upstream(*replicas: FakeReplica) -> StaticUpstreams:
    return StaticUpstreams(
        ReplicaEndpoint("main", r.name, r.base_url, "main-served", "org/model", "rev1")
        for r in replicas
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def stream_lines(client: httpx.AsyncClient, body: dict[str, Any], token: str) -> list[str]:
    async with client.stream("POST", "/chat/completions", json=body, headers=auth(token)) as r:
        assert r.status_code == 200
        return [line async for line in r.aiter_lines() if line.startswith("data: ")]


async def test_stream_options_reach_the_caller_unchanged() -> None:
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(upstream(replica)) as gw,
    ):
        token = gw.tokens.issue("intake", "intake-0")
        stream = {**CHAT, "stream": True}
        asked = {"include_usage": True, "continuous_usage_stats": False}
        async with httpx.AsyncClient(base_url=gw.url) as client:
            plain = await stream_lines(client, stream, token)
            declined = await stream_lines(
                client, {**stream, "stream_options": {"include_usage": False}}, token
            )
            wanted = await stream_lines(client, {**stream, "stream_options": asked}, token)
    chunks = {
        name: [json.loads(line[6:]) for line in lines[:-1]]
        for name, lines in (("plain", plain), ("declined", declined), ("wanted", wanted))
    }
    for name in ("plain", "declined"):  # no usage chunk, every chunk has its choice
        assert all(chunk["choices"] for chunk in chunks[name]), chunks[name]
        assert not any("usage" in chunk for chunk in chunks[name])
    # asked for: the usage chunk arrives as vLLM wrote it, and what it asked went upstream as is
    assert chunks["wanted"][-1]["choices"] == [] and chunks["wanted"][-1]["usage"]
    assert replica.received[2]["stream_options"] == asked
    assert replica.received[1]["stream_options"] == {"include_usage": True}
    # the budget and record get the real usage whichever way the caller asked
    records = gw.records.of("llm.call")
    assert [r["attributes"]["tokens_out"] for r in records] == [3, 3, 3]
    # the output digest is of what the caller received
    received = ("\n\n".join(plain) + "\n\n").encode()
    assert records[0]["outputs"]["bytes"] == len(received)


def test_the_usage_chunk_is_recognised_across_reads() -> None:
    usage = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
    text = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"\\"usage\\""}}]}\n\n'
    whole = text + usage + b"data: [DONE]\n\n"
    for cut in range(1, len(whole)):  # every split point of two reads
        stripper = UsageStripper()
        out = stripper.feed(whole[:cut]) + stripper.feed(whole[cut:]) + stripper.flush()
        assert out == text + b"data: [DONE]\n\n", cut
        assert stripper.stripped == 1


async def test_errors_the_gateway_answers_itself_are_openai_shaped() -> None:
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(upstream(replica), max_request_bytes=4096) as gw,
    ):
        headers = auth(gw.tokens.issue("intake", "intake-0"))
        async with httpx.AsyncClient(base_url=gw.url, headers=headers) as client:
            answers = {
                "unknown path": await client.get("/embeddings"),
                "unknown root path": await client.post(f"{gw.url[:-3]}/nothing"),
                "wrong method": await client.get("/chat/completions"),
                "too large": await client.post(
                    "/chat/completions", content=b'{"model": "' + b"x" * 8000 + b'"}'
                ),
                "unknown model": await client.get("/models/gpt-9"),
                "no token": await client.get("/models/main", headers={"Authorization": ""}),
            }
            model = await client.get("/models/main")
            by_served_name = await client.get("/models/main-served")
    expected = {
        "unknown path": (404, "invalid_request_error", "unknown_url"),
        "unknown root path": (404, "invalid_request_error", "unknown_url"),
        "wrong method": (405, "invalid_request_error", "method_not_allowed"),
        "too large": (413, "invalid_request_error", "request_too_large"),
        "unknown model": (404, "invalid_request_error", "model_not_found"),
        "no token": (401, "authentication_error", "invalid_api_key"),
    }
    for what, (status, kind, code) in expected.items():
        answer = answers[what]
        assert answer.headers["content-type"].startswith("application/json"), what
        error = answer.json()["error"]
        assert (answer.status_code, error["type"], error["code"]) == (status, kind, code), what
        assert error["message"]
    assert "POST" in answers["wrong method"].headers["Allow"]
    assert "GET /v1/models/{model}" in answers["unknown path"].json()["error"]["message"]
    assert model.status_code == 200 and model.json()["id"] == "main"
    assert model.json()["object"] == "model" and model.json()["root"] == "org/model"
    assert by_served_name.json()["id"] == "main"


async def test_a_model_the_policy_hides_is_not_found() -> None:
    def policy(agent: str, resource: str, verb: str) -> Answer:
        return Answer(resource != "model:main", "deny-main")

    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(upstream(replica), policy=policy) as gw,
    ):
        headers = auth(gw.tokens.issue("intake", "intake-0"))
        async with httpx.AsyncClient(base_url=gw.url, headers=headers) as client:
            hidden = await client.get("/models/main")
            listed = await client.get("/models")
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"
    assert listed.json()["data"] == []


async def test_never_fits_is_400_without_retry_and_spent_is_429_with_retry_after() -> None:
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(upstream(replica), limits=budget(100, 60)) as gw,
    ):
        headers = auth(gw.tokens.issue("intake", "intake-0"))
        async with httpx.AsyncClient(base_url=gw.url, headers=headers) as client:
            never = await client.post("/chat/completions", json={**CHAT, "max_tokens": 500})
            first = await client.post("/chat/completions", json={**CHAT, "max_tokens": 80})
            spent = await client.post("/chat/completions", json={**CHAT, "max_tokens": 80})
    assert never.status_code == 400 and never.headers["x-should-retry"] == "false"
    error = never.json()["error"]
    assert error["code"] == "exceeds_limit" and error["param"] == "max_tokens"
    assert "limits.toml:" in error["message"] and "100" in error["message"]
    assert first.status_code == 200
    assert spent.status_code == 429 and int(spent.headers["Retry-After"]) >= 1
    assert spent.json()["error"]["code"] == "rate_limited"
    assert "x-should-retry" not in spent.headers
    decisions = [r["decision"] for r in gw.records.of("llm.call")]
    assert decisions == ["exceeds_limit", "ok", "rate_limited"]


# --- spans -------------------------------------------------------------------------------------

# From the GenAI semantic conventions, inference span (docs/gen-ai/gen-ai-spans.md): the
# attributes each call below must carry, with the value this gateway must give them.
INFERENCE_REQUIRED = {"gen_ai.operation.name", "gen_ai.provider.name"}
CHAT_TABLE: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "vllm",
    "gen_ai.request.model": "main",  # Conditionally Required: if available
    "gen_ai.request.temperature": 0.2,  # Recommended, as sent
    "gen_ai.request.top_p": 0.9,
    "gen_ai.request.max_tokens": 8,
    "gen_ai.request.frequency_penalty": 0.5,
    "gen_ai.request.presence_penalty": -0.5,
    "gen_ai.request.stop_sequences": ("END", "STOP"),
    "gen_ai.request.seed": 7,  # Conditionally Required: if the request includes a seed
    "gen_ai.request.choice.count": 2,  # Conditionally Required: in the request and != 1
    "gen_ai.output.type": "json",  # Conditionally Required: if the request names a format
    "gen_ai.response.id": "cmpl-1",  # Recommended
    "gen_ai.response.model": "main-served",
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.usage.input_tokens": 11,
    "gen_ai.usage.output_tokens": 3,
    "server.address": "127.0.0.1",  # Recommended; server.port: Conditionally Required with it
}
COMPLETION_TABLE: dict[str, Any] = {
    "gen_ai.operation.name": "text_completion",
    "gen_ai.provider.name": "vllm",
    "gen_ai.request.model": "main",
    "gen_ai.request.max_tokens": 4,
    "gen_ai.request.stop_sequences": ("\n",),
    "gen_ai.response.id": "cmpl-1",
}


class Spans:
    """The spans exported so far (flushed first: export is batched)."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.telemetry = setup_telemetry(
            TelemetrySettings(export=True), service_name="agentd-test", exporter=self.exporter
        )

    def finished(self) -> list[ReadableSpan]:
        self.telemetry.force_flush()
        return list(self.exporter.get_finished_spans())


@pytest.fixture
def exported() -> Iterator[Spans]:
    spans = Spans()
    try:
        yield spans
    finally:
        spans.telemetry.shutdown()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_spans_follow_the_genai_conventions(exported: Spans) -> None:
    chat = {
        **CHAT,
        "temperature": 0.2,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "stop": ["END", "STOP"],
        "seed": 7,
        "n": 2,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {}}},
    }
    completion = {"model": "main", "prompt": "def f(", "max_tokens": 4, "stop": "\n"}
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(upstream(replica)) as gw,
    ):
        headers = auth(gw.tokens.issue("intake", "intake-0"))
        async with httpx.AsyncClient(base_url=gw.url, headers=headers) as client:
            assert (await client.post("/chat/completions", json=chat)).status_code == 200
            assert (await client.post("/completions", json=completion)).status_code == 200
            async with client.stream(
                "POST", "/chat/completions", json={**CHAT, "stream": True}
            ) as streamed:
                await streamed.aread()
    finished = exported.finished()
    spans = {s.name: s for s in finished}
    assert set(spans) == {"chat main", "text_completion main"}
    chat_spans = [s for s in finished if s.name == "chat main"]
    plain, streamed_span = chat_spans
    for span, table in ((plain, CHAT_TABLE), (spans["text_completion main"], COMPLETION_TABLE)):
        assert span.kind is SpanKind.CLIENT
        assert set(attributes(span)) >= INFERENCE_REQUIRED
        got = attributes(span)
        assert {key: got.get(key) for key in table} == table, span.name
        assert got["server.port"] == httpx.URL(replica.base_url).port
        assert "error.type" not in got and span.status.status_code is not StatusCode.ERROR
    # a stream: the id and usage come from its last chunks (the usage chunk, kept from the caller)
    streamed_attributes = attributes(streamed_span)
    assert streamed_attributes["gen_ai.response.id"] == "cmpl-1"
    assert streamed_attributes["gen_ai.usage.output_tokens"] == 3
    # not in the request: not on the span (no guessed defaults)
    for absent in ("gen_ai.request.temperature", "gen_ai.output.type", "gen_ai.request.seed"):
        assert absent not in streamed_attributes
    # each record names its span
    records = gw.records.of("llm.call")
    assert [r["span_id"] for r in records] == [
        f"{s.context.span_id:016x}" for s in (plain, spans["text_completion main"], streamed_span)
    ]


async def test_every_refused_call_has_a_failed_span_and_a_record(
    exported: Spans,
) -> None:
    def policy(agent: str, resource: str, verb: str) -> Answer:
        return Answer(agent != "blocked", "deny-blocked", "not this one")

    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(upstream(replica), policy=policy, limits=budget(100, 60)) as gw,
    ):
        ok = auth(gw.tokens.issue("intake", "intake-0"))
        blocked = auth(gw.tokens.issue("blocked", "blocked-0"))
        async with httpx.AsyncClient(base_url=gw.url) as client:
            calls = [
                ("/chat/completions", CHAT, auth("nope")),  # 401
                ("/completions", {"model": "main", "prompt": "x", "max_tokens": 2}, blocked),
                ("/chat/completions", {**CHAT, "model": "gpt-9"}, ok),  # 404
                ("/chat/completions", {**CHAT, "max_tokens": 80}, ok),  # 200
                ("/chat/completions", {**CHAT, "max_tokens": 80}, ok),  # 429
                ("/chat/completions", {**CHAT, "max_tokens": 900}, ok),  # 400, never fits
                ("/chat/completions", {"model": "main"}, ok),  # 400, malformed
            ]
            statuses = [
                (await client.post(path, json=body, headers=headers)).status_code
                for path, body, headers in calls
            ]
    assert statuses == [401, 403, 404, 200, 429, 400, 400]
    spans = exported.finished()
    records = gw.records.of("llm.call")
    assert len(spans) == len(records) == len(calls)
    expected = [
        ("chat", "invalid_api_key", None),
        ("text_completion main", "policy_denied", "blocked"),
        ("chat gpt-9", "model_not_found", "intake"),
        ("chat main", None, "intake"),
        ("chat main", "rate_limited", "intake"),
        ("chat main", "exceeds_limit", "intake"),
        ("chat", "bad_request", "intake"),
    ]
    for span, record, status, (name, error, agent) in zip(
        spans, records, statuses, expected, strict=True
    ):
        got = attributes(span)
        assert span.name == name
        assert got.get("error.type") == error, name
        assert got.get("gen_ai.agent.name") == agent
        assert record["span_id"] == f"{span.context.span_id:016x}"
        assert record["trace_id"] == f"{span.context.trace_id:032x}"
        if error is not None:
            assert span.status.status_code is StatusCode.ERROR
            assert got["http.response.status_code"] == status
            assert record["decision"] == error
