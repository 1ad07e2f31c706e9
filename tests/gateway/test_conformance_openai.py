"""The gateway as the official clients see it, in front of a real vLLM server (CPU build, the
tiny model; one server for the module).

The openai SDK, sync (in a thread: the gateway shares the test's event loop) and async: chat and
completions, streaming with and without `stream_options`, strict tools, a json_schema
response_format, `chat.completions.parse`, models list and retrieve, and every error class the
gateway answers with the SDK's own exception class and retry behaviour (a call that can never
fit the budget is not retried; a spent budget is retried after Retry-After and succeeds).
langchain-openai: invoke, stream (with and without usage), bind_tools strict,
with_structured_output. Each attempt the SDK makes is one `llm.call` record, so the records
count the SDK's retries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from agentd.gateway import ReplicaEndpoint, StaticUpstreams
from tests.gateway.support import Running, budget, running_gateway
from tests.inference.tool_schemas import TOOLS, Report, WeatherArgs
from tests.inference.vllm_server import VllmServer, free_port, vllm_python

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.anyio,
    pytest.mark.timeout(420),  # a start takes 40 s idle, minutes on a loaded machine
    pytest.mark.skipif(
        not vllm_python().exists(),
        reason=f"no vLLM environment at {vllm_python()} (set AGENTD_VLLM_PYTHON)",
    ),
]

USER: list[Any] = [{"role": "user", "content": "Tell me about Paris."}]
WEATHER = cast(Any, TOOLS[0])


@pytest.fixture(scope="module")
def vllm(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    server = VllmServer.start(tiny_model_dir, tmp_path_factory.mktemp("vllm"))
    yield server
    server.stop()


def pool(vllm: VllmServer) -> StaticUpstreams:
    return StaticUpstreams([ReplicaEndpoint("main", "vllm-0", vllm.base_url, "tiny", "tiny", "r1")])


@dataclass(frozen=True)
class Answer:
    allowed: bool
    rule: str
    reason: str = ""
    policy_version: str = ""


def decisions(gw: Running) -> list[str]:
    return [r["decision"] for r in gw.records.of("llm.call")]


async def test_sync_and_async_clients_chat_complete_and_list_models(vllm: VllmServer) -> None:
    async with running_gateway(pool(vllm)) as gw:
        token = gw.tokens.issue("intake", "intake-0")

        def sync_calls() -> tuple[Any, Any, list[str], Any]:
            with OpenAI(base_url=gw.url, api_key=token, max_retries=0) as client:
                chat = client.chat.completions.create(model="main", messages=USER, max_tokens=8)
                completion = client.completions.create(model="main", prompt="def f(", max_tokens=4)
                models = [m.id for m in client.models.list()]
                return chat, completion, models, client.models.retrieve("main")

        chat, completion, models, model = await anyio.to_thread.run_sync(sync_calls)
        async with AsyncOpenAI(base_url=gw.url, api_key=token, max_retries=0) as client:
            achat = await client.chat.completions.create(model="tiny", messages=USER, max_tokens=8)
            by_served_name = await client.models.retrieve("tiny")
    for answer in (chat, achat):
        assert answer.object == "chat.completion" and answer.id
        assert answer.choices[0].message.role == "assistant"
        assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 8
    assert completion.object == "text_completion" and completion.choices[0].text is not None
    assert models == ["main"]
    assert (model.id, model.object, model.owned_by) == ("main", "model", "agentd")
    assert by_served_name.id == "main"
    assert decisions(gw) == ["ok", "ok", "ok"]  # models calls are not LLM calls


async def test_streams_with_and_without_stream_options(vllm: VllmServer) -> None:
    async with running_gateway(pool(vllm)) as gw:
        token = gw.tokens.issue("intake", "intake-0")
        body: dict[str, Any] = {
            "model": "main",
            "messages": USER,
            "max_tokens": 12,
            "extra_body": {"ignore_eos": True},
        }
        async with AsyncOpenAI(base_url=gw.url, api_key=token, max_retries=0) as client:
            # the loop most clients write: every chunk has a choice
            text = ""
            async for chunk in await client.chat.completions.create(**body, stream=True):
                text += chunk.choices[0].delta.content or ""
            with_usage = [
                chunk
                async for chunk in await client.chat.completions.create(
                    **body, stream=True, stream_options={"include_usage": True}
                )
            ]
            completions = [
                chunk.choices[0].text
                async for chunk in await client.completions.create(
                    model="main", prompt="def f(", max_tokens=6, stream=True
                )
            ]

        def sync_stream() -> list[str]:
            with OpenAI(base_url=gw.url, api_key=token, max_retries=0) as client:
                stream = client.chat.completions.create(**body, stream=True)
                return [chunk.choices[0].delta.content or "" for chunk in stream]

        sync_pieces = await anyio.to_thread.run_sync(sync_stream)
    assert text and sync_pieces
    # asked for: the last chunk is the usage chunk, with no choice
    last = with_usage[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 12
    assert all(chunk.choices for chunk in with_usage[:-1])
    assert len(completions) >= 1
    # the gateway read the usage of every stream, asked for or not
    tokens_out = [r["attributes"]["tokens_out"] for r in gw.records.of("llm.call")]
    assert tokens_out[:2] == [12, 12] and tokens_out[3] == 12
    assert 1 <= tokens_out[2] <= 6


async def test_strict_tools_json_schema_and_parse(vllm: VllmServer) -> None:
    async with running_gateway(pool(vllm)) as gw:
        token = gw.tokens.issue("underwriter", "underwriter-0")
        async with AsyncOpenAI(base_url=gw.url, api_key=token, max_retries=0) as client:
            tool_call = await client.chat.completions.create(
                model="main",
                messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                tools=[WEATHER],
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                max_tokens=256,
                temperature=0,
            )
            schema = await client.chat.completions.create(
                model="main",
                messages=[{"role": "user", "content": "Report the incident."}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": "report",
                        "schema": Report.model_json_schema(),
                        "strict": True,
                    },
                },
                max_tokens=256,
                temperature=0,
            )
            parsed = await client.chat.completions.parse(
                model="main",
                messages=[{"role": "user", "content": "Report the incident."}],
                response_format=Report,
                max_tokens=256,
                temperature=0,
            )
    (call,) = tool_call.choices[0].message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    WeatherArgs.model_validate(json.loads(call.function.arguments))
    Report.model_validate_json(schema.choices[0].message.content or "")
    assert isinstance(parsed.choices[0].message.parsed, Report)
    assert decisions(gw) == ["ok", "ok", "ok"]


async def test_every_error_is_the_sdks_own_class(vllm: VllmServer) -> None:
    def policy(agent: str, resource: str, verb: str) -> Answer:
        return Answer(agent != "blocked", "deny-blocked", "blocked by the test policy")

    dead = ReplicaEndpoint("gone", "dead", f"http://127.0.0.1:{free_port()}", "x", "x", "r1")
    upstreams = StaticUpstreams([*pool(vllm).endpoints("main"), dead])
    async with running_gateway(upstreams, policy=policy, max_request_bytes=2048) as gw:
        token = gw.tokens.issue("intake", "intake-0")
        blocked = gw.tokens.issue("blocked", "blocked-0")
        chat: dict[str, Any] = {"model": "main", "messages": USER, "max_tokens": 4}
        raised: dict[str, openai.APIStatusError] = {}
        async with (
            AsyncOpenAI(base_url=gw.url, api_key=token, max_retries=1) as client,
            AsyncOpenAI(base_url=gw.url, api_key="wrong", max_retries=1) as stranger,
            AsyncOpenAI(base_url=gw.url, api_key=blocked, max_retries=1) as outsider,
        ):
            attempts = {
                "401": stranger.chat.completions.create(**chat),
                "403": outsider.chat.completions.create(**chat),
                "404 model": client.chat.completions.create(**{**chat, "model": "gpt-9"}),
                "404 retrieve": client.models.retrieve("gpt-9"),
                "400": client.chat.completions.create(**chat, n=0),
                "413": client.chat.completions.create(**{**chat, "user": "x" * 4000}),
                "405": client.get("/chat/completions", cast_to=object),
                "503": client.chat.completions.create(**{**chat, "model": "gone"}),
            }
            for name, pending in attempts.items():
                try:
                    await pending
                except openai.APIStatusError as exc:
                    raised[name] = exc
    expected: dict[str, tuple[type[openai.APIStatusError], int, str | None]] = {
        "401": (openai.AuthenticationError, 401, "invalid_api_key"),
        "403": (openai.PermissionDeniedError, 403, "policy_denied"),
        "404 model": (openai.NotFoundError, 404, "model_not_found"),
        "404 retrieve": (openai.NotFoundError, 404, "model_not_found"),
        "400": (openai.BadRequestError, 400, "bad_request"),
        "413": (openai.APIStatusError, 413, "request_too_large"),
        "405": (openai.APIStatusError, 405, "method_not_allowed"),
        "503": (openai.InternalServerError, 503, "no_replica"),
    }
    assert set(raised) == set(expected)
    for name, (cls, status, code) in expected.items():
        error = raised[name]
        assert type(error) is cls, (name, error)
        assert (error.status_code, error.code) == (status, code), name
        assert error.message and error.type, name
    assert raised["400"].param == "n"
    assert "deny-blocked" in raised["403"].message
    # only the 503 was retried (max_retries=1): 4xx are final for the SDK
    assert decisions(gw) == [
        "invalid_api_key",
        "policy_denied",
        "model_not_found",
        "bad_request",
        "request_too_large",
        "unavailable",
        "unavailable",
    ]


async def test_permanent_and_temporary_budget_refusals(vllm: VllmServer) -> None:
    # 200 tokens per 20 s (10 a second): a call of 300 can never fit; one a few tokens over
    # what is left waits a few seconds
    async with running_gateway(pool(vllm), limits=budget(200, 20)) as gw:
        token = gw.tokens.issue("intake", "intake-0")
        chat: dict[str, Any] = {"model": "main", "messages": USER}
        async with (
            AsyncOpenAI(base_url=gw.url, api_key=token, max_retries=3) as patient,
            AsyncOpenAI(base_url=gw.url, api_key=token, max_retries=0) as impatient,
        ):
            started = anyio.current_time()
            with pytest.raises(openai.BadRequestError) as never:
                await patient.chat.completions.create(**chat, max_tokens=300)
            never_s = anyio.current_time() - started
            await patient.chat.completions.create(
                **chat, max_tokens=120, extra_body={"ignore_eos": True}
            )
            left = await gw.gateway.budgets.remaining("intake", "main")
            assert left is not None
            over = int(left) + 5  # plus the prompt's estimate: more than is left, for now
            with pytest.raises(openai.RateLimitError) as spent:
                await impatient.chat.completions.create(**chat, max_tokens=over)
            # the SDK waits out Retry-After and tries again: the refilled budget lets it in
            waited = await patient.chat.completions.create(**chat, max_tokens=over)
    assert never.value.code == "exceeds_limit" and "limits.toml:" in never.value.message
    assert never.value.response.headers["x-should-retry"] == "false"
    assert never_s < 5  # refused at once, not after sleeping out a Retry-After
    assert spent.value.code == "rate_limited"
    assert 1 <= int(spent.value.response.headers["Retry-After"]) <= 10
    assert waited.choices
    made = decisions(gw)
    assert made[:3] == ["exceeds_limit", "ok", "rate_limited"]
    # the patient client was refused, waited, and got through
    assert made[3:] == ["rate_limited", "ok"]


class City(BaseModel):
    city: str
    country: str


async def test_langchain_openai(vllm: VllmServer) -> None:
    async with running_gateway(pool(vllm)) as gw:
        token = gw.tokens.issue("underwriter", "underwriter-0")
        llm = ChatOpenAI(base_url=gw.url, api_key=token, model="main", temperature=0)
        short = llm.bind(max_tokens=8)

        def sync_calls() -> tuple[Any, list[Any], list[Any]]:
            answer = short.invoke("Say hello.")
            plain = list(short.stream("Count to three."))
            counted = list(short.stream("Count to three.", stream_usage=True))
            return answer, plain, counted

        answer, plain, counted = await anyio.to_thread.run_sync(sync_calls)
        astreamed = [chunk async for chunk in short.astream("Count to three.")]
        tool = llm.bind_tools([WEATHER], strict=True, tool_choice="get_weather")
        message = await tool.ainvoke("What is the weather in Paris this week?")
        structured = llm.with_structured_output(Report, method="json_schema", strict=True)
        report = await structured.ainvoke("Summarise the incident as a report.")
        city = await llm.with_structured_output(City, method="json_schema").ainvoke("Paris?")
    assert answer.content is not None and answer.response_metadata["finish_reason"]
    assert plain and astreamed
    assert all(chunk.usage_metadata is None for chunk in plain)  # not asked: none came
    assert sum(c.usage_metadata["output_tokens"] for c in counted if c.usage_metadata) > 0
    (call,) = message.tool_calls
    assert call["name"] == "get_weather"
    WeatherArgs.model_validate(call["args"])
    assert isinstance(report, Report) and isinstance(city, City)
    assert decisions(gw) == ["ok"] * 7
