"""The gateway in front of a real vLLM server (CPU build, the tiny model).

One server for the module (about 40 s to start). langchain-openai and the openai client talk to
the gateway unchanged; strict tool calls and structured output parse; streaming, budgets,
errors, retry onto another replica and a replica SIGKILLed mid-request behave as the fake tests
say they do. The SIGKILL test runs last: it kills the module's server and starts another.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI

from agentd.gateway import ReplicaEndpoint, RoundRobin, StaticUpstreams
from agentd.gateway._protocol import CallRequest
from tests.gateway.support import budget, running_gateway
from tests.gateway.underwriter import APPLICATION, Context, rationale_drafter, underwriter_graph
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


# The SIGKILL test needs a generation that is still running when its first token reaches the
# client, however loaded the machine: the tiny model writes 2,000 tokens in about 4 s here, so
# the module's server accepts 16,000 (its RoPE extends past the 2,048 it was built with).
LONG_GENERATION = 16_000
LONG_CONTEXT = (
    ["--max-model-len", str(LONG_GENERATION + 64)],
    {"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"},
)


class Servers:
    """The module's one server; the SIGKILL test replaces it."""

    def __init__(self, model_dir: Path, work: Path) -> None:
        self.model_dir, self.work = model_dir, work
        args, env = LONG_CONTEXT
        self.current = VllmServer.start(model_dir, _mkdir(work / "a"), extra_args=args, env=env)

    def endpoint(self, name: str = "vllm-0") -> ReplicaEndpoint:
        return ReplicaEndpoint("main", name, self.current.base_url, "tiny", "tiny-random", "r1")

    def restart(self) -> None:
        self.current.stop()
        self.current = VllmServer.start(self.model_dir, _mkdir(self.work / "b"))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def servers(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    running = Servers(tiny_model_dir, tmp_path_factory.mktemp("vllm"))
    yield running
    running.current.stop()


def dead_endpoint() -> ReplicaEndpoint:
    return ReplicaEndpoint(
        "main", "dead", f"http://127.0.0.1:{free_port()}", "tiny", "tiny-random", "r1"
    )


async def test_langchain_strict_tool_call_and_structured_output(servers: Servers) -> None:
    async with running_gateway(StaticUpstreams([servers.endpoint()])) as gw:
        token = gw.tokens.issue("underwriter", "underwriter-0")
        llm = ChatOpenAI(
            base_url=gw.url, api_key=token, model="main", temperature=0, max_completion_tokens=256
        )
        weather = cast(dict[str, Any], TOOLS[0])
        bound = llm.bind_tools([weather], strict=True, tool_choice="get_weather")
        message = await bound.ainvoke("What is the weather in Paris this week?")
        (call,) = message.tool_calls
        assert call["name"] == "get_weather"
        WeatherArgs.model_validate(call["args"])
        structured = llm.with_structured_output(Report, method="json_schema", strict=True)
        report = await structured.ainvoke("Summarise the incident as a report.")
        assert isinstance(report, Report)
    first, second = gw.records.of("llm.call")
    for record in (first, second):
        assert record["decision"] == "ok" and record["agent"] == "underwriter"
        assert record["attributes"]["tokens_in"] > 0 and record["attributes"]["tokens_out"] > 0
        assert record["attributes"]["model_replica"] == "vllm-0"
        assert record["lineage"]["model_id"] == "tiny-random"
    assert first["attributes"]["finish_reason"] in {"tool_calls", "stop"}


async def test_streaming_through_the_gateway(servers: Servers) -> None:
    async with running_gateway(StaticUpstreams([servers.endpoint()])) as gw:
        client = AsyncOpenAI(base_url=gw.url, api_key=gw.tokens.issue("intake", "intake-0"))
        stream = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Tell me a story."}],
            max_tokens=24,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        pieces = []
        async for chunk in stream:
            pieces += [c.delta.content or "" for c in chunk.choices]
        await client.close()
    assert len(pieces) >= 12
    (record,) = gw.records.of("llm.call")
    attributes = record["attributes"]
    assert attributes["tokens_out"] == 24 and attributes["finish_reason"] == "length"
    assert 0 < attributes["ttft_s"] < attributes["latency_s"]


async def test_budget_unknown_model_malformed_and_still_healthy(servers: Servers) -> None:
    upstreams = StaticUpstreams([servers.endpoint()])
    async with running_gateway(upstreams, limits=budget(300, 3600)) as gw:
        headers = {"Authorization": f"Bearer {gw.tokens.issue('intake', 'intake-0')}"}
        body: dict[str, Any] = {
            "model": "main",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 200,
            "ignore_eos": True,  # uses all 200: the budget is settled with the real usage
        }
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=60) as client:
            first = await client.post("/chat/completions", json=body)
            assert first.status_code == 200, first.text
            spent = await client.post("/chat/completions", json=body)
            unknown = await client.post("/chat/completions", json={**body, "model": "gpt-9"})
            malformed = await client.post("/completions", content=b'{"model": "main"')
            wrong_type = await client.post(
                "/completions", json={"model": "main", "prompt": 7, "max_tokens": 1}
            )
            small = await client.post(
                "/completions", json={"model": "main", "prompt": "ping", "max_tokens": 1}
            )
    assert spent.status_code == 429 and int(spent.headers["Retry-After"]) >= 1
    assert unknown.status_code == 404 and "gpt-9" in unknown.json()["error"]["message"]
    assert malformed.status_code == 400 and "not valid JSON" in malformed.text
    assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == "prompt"
    assert small.status_code == 200 and small.json()["usage"]["completion_tokens"] == 1
    decisions = [r["decision"] for r in gw.records.of("llm.call")]
    assert decisions == [
        "ok",
        "rate_limited",
        "model_not_found",
        "bad_request",
        "bad_request",
        "ok",
    ]


async def test_a_prompt_list_n_or_best_of_cannot_spend_past_the_budget(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = 2000
    upstreams = StaticUpstreams([servers.endpoint()])
    # 8 prompts x 300 tokens, every one run to its end: 2,400 tokens against 2,000
    attack = {"model": "main", "prompt": ["Once upon a time"] * 8, "max_tokens": 300}
    attack["ignore_eos"] = True
    single = {**attack, "prompt": "Once upon a time"}
    async with running_gateway(upstreams, limits=budget(tokens, 3600)) as gw:
        headers = {"Authorization": f"Bearer {gw.tokens.issue('intake', 'intake-0')}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=120) as client:
            refused = [
                await client.post("/completions", json=body)
                for body in (attack, {**single, "n": 8}, {**single, "best_of": 8})
            ]
            within = await client.post("/completions", json={**attack, "prompt": ["a", "b"]})
    # each can never fit the 2,000-token budget: 400, not a 429 that invites a retry
    assert [r.status_code for r in refused] == [400, 400, 400], [r.text for r in refused]
    assert within.status_code == 200, within.text
    # vLLM counts every prompt of a list: what the reservation is an upper bound of
    assert within.json()["usage"]["completion_tokens"] == 600
    assert len(within.json()["choices"]) == 2

    # control: the reservation the gateway made before (n x max_tokens) lets the list through
    def old_estimate(self: CallRequest) -> int:
        return len(self.raw) // 4 + self.max_tokens * self.choices

    monkeypatch.setattr(CallRequest, "token_estimate", property(old_estimate))
    async with running_gateway(upstreams, limits=budget(tokens, 3600)) as gw:
        headers = {"Authorization": f"Bearer {gw.tokens.issue('intake', 'intake-0')}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=120) as client:
            through = await client.post("/completions", json=attack)
    assert through.status_code == 200, through.text
    assert through.json()["usage"]["completion_tokens"] == 2400 > tokens


async def test_dead_replica_is_retried_on_the_live_one(servers: Servers) -> None:
    upstreams = StaticUpstreams([dead_endpoint(), servers.endpoint()])
    async with running_gateway(upstreams, chooser=RoundRobin()) as gw:
        client = AsyncOpenAI(base_url=gw.url, api_key=gw.tokens.issue("intake", "intake-0"))
        for _ in range(2):
            answer = await client.completions.create(
                model="main", prompt="def f(", max_tokens=4, extra_body={"ignore_eos": True}
            )
            assert answer.usage is not None and answer.usage.completion_tokens == 4
        await client.close()
    # round robin starts each call at the dead replica: each is retried on the live one (the
    # pool manager, told of the failures, would take the dead one out; StaticUpstreams does not)
    assert [replica for replica, _ in upstreams.failures] == ["dead", "dead"]
    records = gw.records.of("llm.call")
    assert [r["attributes"]["attempts"] for r in records] == [2, 2]
    assert all(r["attributes"]["model_replica"] == "vllm-0" for r in records)


async def test_underwriter_drafts_a_rationale_through_the_gateway(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_gateway(StaticUpstreams([servers.endpoint()])) as gw:
        env = gw.gateway.worker_env("underwriter", "underwriter-0")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        drafted = await underwriter_graph.build(Context(params={"model": "main"})).ainvoke(
            APPLICATION
        )
        monkeypatch.delenv("AGENTD_LLM_URL")
        rules_only = await underwriter_graph.build(Context()).ainvoke(APPLICATION)
    rationale = drafted.pop("rationale")
    assert "error" not in rationale, rationale
    rationale_drafter.Rationale.model_validate({k: v for k, v in rationale.items() if k != "model"})
    assert drafted == rules_only  # the rules decide; the model only explains
    (record,) = gw.records.of("llm.call")
    assert (record["agent"], record["decision"]) == ("underwriter", "ok")


async def test_replica_sigkilled_mid_request(servers: Servers) -> None:
    victim = servers.current
    upstreams = StaticUpstreams([servers.endpoint(), dead_endpoint()])
    async with running_gateway(upstreams) as gw:
        token = gw.tokens.issue("intake", "intake-0")
        headers = {"Authorization": f"Bearer {token}"}
        long_call = {
            "model": "main",
            "prompt": "import os",
            # the stream must still be running when its replica dies (about 30 s of tokens)
            "max_tokens": LONG_GENERATION,
            "ignore_eos": True,
        }
        results: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=120) as client:

            async def plain() -> None:
                results["plain"] = await client.post("/completions", json=long_call)

            async with anyio.create_task_group() as tg:
                tg.start_soon(plain)
                async with client.stream(
                    "POST", "/completions", json={**long_call, "stream": True}
                ) as stream:
                    lines = []
                    async for line in stream.aiter_lines():
                        if line.startswith("data: "):
                            lines.append(line)
                        if len(lines) == 1:  # the first token is out: the replica dies
                            os.killpg(victim.process.pid, signal.SIGKILL)
            victim.process.wait()
            last = json.loads(lines[-1][6:])
            assert last["error"]["code"] == "upstream_failed"
            assert "mid-stream" in last["error"]["message"]
            plain_answer = results["plain"]
            # the plain call had received nothing: it was retried (on the dead port) and
            # failed with the reasons, not with a hang or a half answer
            assert plain_answer.status_code == 503
            assert "vllm-0" in plain_answer.json()["error"]["message"]
            # the pool manager's part, done by hand: a fresh replica, then calls succeed
            await anyio.to_thread.run_sync(servers.restart)
            gw.gateway.set_upstreams(StaticUpstreams([servers.endpoint("vllm-1")]))
            later = await client.post(
                "/completions", json={"model": "main", "prompt": "x", "max_tokens": 2}
            )
        assert later.status_code == 200, later.text
    decisions = [r["decision"] for r in gw.records.of("llm.call")]
    assert sorted(decisions) == ["error", "ok", "unavailable"]
