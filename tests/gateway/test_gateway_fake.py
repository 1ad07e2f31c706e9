"""The gateway's logic against fake OpenAI-compatible replicas: auth, errors, policy, budgets,
retry before the first byte, streaming, and what each call records.

The same paths run against real vLLM in test_gateway_vllm.py; these are the fast, exhaustive
checks.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentd.config import GatewayConfig, load_config
from agentd.errors import ConfigError
from agentd.gateway import LLMGateway, ReplicaEndpoint, StaticUpstreams, TokenBook
from agentd.telemetry import TelemetrySettings, setup_telemetry
from tests.gateway.fake_openai import FakeReplica, fake_replicas
from tests.gateway.support import budget, running_gateway

pytestmark = pytest.mark.anyio

CHAT = {"model": "main", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def endpoints(*replicas: FakeReplica, pool: str = "main") -> StaticUpstreams:
    return StaticUpstreams(
        ReplicaEndpoint(pool, r.name, r.base_url, f"{pool}-served", "org/model", "rev1")
        for r in replicas
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Answer:
    allowed: bool
    rule: str
    reason: str = ""
    policy_version: str = ""


async def test_chat_is_relayed_and_recorded() -> None:
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(endpoints(replica)) as gw,
    ):
        token = gw.tokens.issue("intake", "intake-0")
        async with httpx.AsyncClient(base_url=gw.url) as client:
            response = await client.post("/chat/completions", json=CHAT, headers=auth(token))
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "hello from r0"
        # the pool's name became the served name upstream
        assert replica.received[0]["model"] == "main-served"
        (record,) = gw.records.of("llm.call")
        assert record["agent"] == "intake" and record["replica"] == "intake-0"
        assert record["decision"] == "ok"
        assert record["lineage"] == {"model_id": "org/model", "model_revision": "rev1"}
        attributes = record["attributes"]
        assert attributes["pool"] == "main" and attributes["model_replica"] == "r0"
        assert (attributes["tokens_in"], attributes["tokens_out"]) == (11, 3)
        assert attributes["finish_reason"] == "stop"
        assert record["outputs"]["sha256"] and record["inputs"]["bytes"] > 0


async def test_the_chat_span_names_the_replica_the_call_went_to() -> None:
    exporter = InMemorySpanExporter()
    telemetry = setup_telemetry(
        TelemetrySettings(export=True), service_name="agentd-test", exporter=exporter
    )
    try:
        async with (
            fake_replicas(FakeReplica("r0")) as (replica,),
            running_gateway(endpoints(replica)) as gw,
        ):
            token = gw.tokens.issue("intake", "intake-0")
            async with httpx.AsyncClient(base_url=gw.url) as client:
                response = await client.post("/chat/completions", json=CHAT, headers=auth(token))
            assert response.status_code == 200, response.text
        telemetry.force_flush()
    finally:
        telemetry.shutdown()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "chat main"]
    upstream = httpx.URL(replica.base_url)
    assert span.attributes is not None
    assert span.attributes["server.address"] == upstream.host == "127.0.0.1"
    assert span.attributes["server.port"] == upstream.port
    assert span.attributes["gen_ai.provider.name"] == "vllm"


async def test_stream_asks_upstream_for_usage_strips_it_and_records_ttft() -> None:
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(endpoints(replica)) as gw,
    ):
        token = gw.tokens.issue("intake", "intake-0")
        body = {**CHAT, "stream": True}
        async with (
            httpx.AsyncClient(base_url=gw.url) as client,
            client.stream("POST", "/chat/completions", json=body, headers=auth(token)) as resp,
        ):
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in resp.aiter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        # the caller did not ask for usage: every chunk it gets has a choice (the gateway
        # asked upstream for the usage chunk and kept it to itself)
        words = [json.loads(line[6:])["choices"][0]["delta"]["content"] for line in lines[:-1]]
        assert "".join(words) == "hello from r0"
        assert replica.received[0]["stream_options"] == {"include_usage": True}
        attributes = gw.records.of("llm.call")[0]["attributes"]
        assert attributes["stream"] is True
        assert attributes["tokens_out"] == 3 and attributes["finish_reason"] == "length"
        assert 0 < attributes["ttft_s"] <= attributes["latency_s"]


async def test_unknown_token_is_401_and_revoked_token_too() -> None:
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(endpoints(replica)) as gw,
    ):
        token = gw.tokens.issue("intake", "intake-0")
        async with httpx.AsyncClient(base_url=gw.url) as client:
            assert (await client.post("/chat/completions", json=CHAT)).status_code == 401
            wrong = await client.post("/chat/completions", json=CHAT, headers=auth("nope"))
            assert wrong.status_code == 401
            assert wrong.json()["error"]["code"] == "invalid_api_key"
            assert gw.tokens.revoke("intake-0")
            revoked = await client.post("/chat/completions", json=CHAT, headers=auth(token))
            assert revoked.status_code == 401
        assert replica.received == []


async def test_errors_are_openai_shaped_and_the_gateway_stays_healthy() -> None:
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(endpoints(replica)) as gw,
    ):
        headers = auth(gw.tokens.issue("intake", "intake-0"))
        async with httpx.AsyncClient(base_url=gw.url) as client:
            bad_json = await client.post("/chat/completions", content=b"{oops", headers=headers)
            assert bad_json.status_code == 400
            assert "not valid JSON" in bad_json.json()["error"]["message"]
            no_messages = await client.post(
                "/chat/completions", json={"model": "main"}, headers=headers
            )
            assert no_messages.status_code == 400
            assert no_messages.json()["error"]["param"] == "messages"
            negative = await client.post(
                "/chat/completions", json={**CHAT, "max_tokens": -1}, headers=headers
            )
            assert negative.status_code == 400
            unknown = await client.post(
                "/chat/completions", json={**CHAT, "model": "gpt-9"}, headers=headers
            )
            assert unknown.status_code == 404
            assert unknown.json()["error"]["code"] == "model_not_found"
            # the served name reaches the pool too
            served = await client.post(
                "/chat/completions", json={**CHAT, "model": "main-served"}, headers=headers
            )
            assert served.status_code == 200
            models = await client.get("/models", headers=headers)
            assert [m["id"] for m in models.json()["data"]] == ["main"]
        assert len(replica.received) == 1
        decisions = [r["decision"] for r in gw.records.of("llm.call")]
        assert decisions == ["bad_request", "bad_request", "bad_request", "model_not_found", "ok"]


async def test_policy_denial_is_403_with_the_rule() -> None:
    def policy(agent: str, obj: str, action: str) -> Answer:
        assert action == "infer"
        if agent == "echo":
            return Answer(False, "policy.csv:9", "echo may not infer")
        return Answer(True, "policy.csv:27", policy_version="v7")

    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(endpoints(replica), policy=policy) as gw,
    ):
        async with httpx.AsyncClient(base_url=gw.url) as client:
            denied = await client.post(
                "/chat/completions", json=CHAT, headers=auth(gw.tokens.issue("echo", "echo-0"))
            )
            allowed = await client.post(
                "/chat/completions", json=CHAT, headers=auth(gw.tokens.issue("intake", "i-0"))
            )
        assert denied.status_code == 403
        assert "policy.csv:9" in denied.json()["error"]["message"]
        assert allowed.status_code == 200
        first, second = gw.records.of("llm.call")
        assert (first["decision"], first["rule"]) == ("policy_denied", "policy.csv:9")
        assert (second["decision"], second["rule"]) == ("ok", "policy.csv:27")
        assert second["lineage"]["policy_version"] == "v7"
        assert len(replica.received) == 1


async def test_budget_is_reserved_settled_and_then_spent() -> None:
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(endpoints(replica), limits=budget(400, 3600)) as gw,
    ):
        headers = auth(gw.tokens.issue("intake", "intake-0"))
        async with httpx.AsyncClient(base_url=gw.url) as client:
            ok = await client.post("/chat/completions", json=CHAT, headers=headers)
            assert ok.status_code == 200
            # settled with the real usage (11 + 3), not the reservation
            remaining = await gw.gateway.budgets.remaining("intake", "main")
            assert remaining is not None and 400 - 14 - 1 < remaining <= 400 - 14 + 1
            big = {**CHAT, "max_tokens": 380}
            spent = await client.post("/chat/completions", json=big, headers=headers)
        assert spent.status_code == 429
        assert int(spent.headers["Retry-After"]) >= 1
        assert spent.json()["error"]["code"] == "rate_limited"
        assert len(replica.received) == 1
        record = gw.records.of("llm.call")[-1]
        assert record["decision"] == "rate_limited"
        assert record["attributes"]["status"] == 429


async def test_failure_before_first_byte_is_retried_elsewhere() -> None:
    dead = ReplicaEndpoint("main", "dead", "http://127.0.0.1:9", "main-served", "m", None)
    async with fake_replicas(
        FakeReplica("reset", "reset"), FakeReplica("busy", "busy"), FakeReplica("good")
    ) as replicas:
        upstreams = endpoints(*replicas)
        upstreams = StaticUpstreams([dead, *(upstreams.endpoints("main"))])
        async with running_gateway(upstreams, max_attempts=4) as gw:
            headers = auth(gw.tokens.issue("intake", "intake-0"))
            async with httpx.AsyncClient(base_url=gw.url) as client:
                for stream in (False, True):
                    for _ in range(3):
                        body: dict[str, Any] = {**CHAT, "stream": stream}
                        response = await client.post(
                            "/chat/completions", json=body, headers=headers
                        )
                        assert response.status_code == 200, response.text
                        assert " good" in response.text
        failed = {replica for replica, _ in upstreams.failures}
        assert failed <= {"dead", "reset", "busy"} and failed
        attempts = [r["attributes"]["attempts"] for r in gw.records.of("llm.call")]
        assert max(attempts) > 1
        assert all(r["attributes"]["model_replica"] == "good" for r in gw.records.of("llm.call"))


async def test_no_replica_answering_is_503_with_the_reasons() -> None:
    idle = ReplicaEndpoint("idle", "idle-0", "http://127.0.0.1:9", "idle-served", "org/model")
    async with fake_replicas(FakeReplica("a", "reset"), FakeReplica("b", "busy")) as replicas:
        # pool main: every replica fails; pool idle: no replica is ready, none is tried
        upstreams = StaticUpstreams(endpoints(*replicas).endpoints("main"), loading=[idle])
        limits = budget(1000, 3600) + budget(1000, 3600, pool="idle")
        async with running_gateway(upstreams, limits=limits) as gw:
            headers = auth(gw.tokens.issue("intake", "intake-0"))
            async with httpx.AsyncClient(base_url=gw.url) as client:
                response = await client.post("/chat/completions", json=CHAT, headers=headers)
                empty = await client.post(
                    "/chat/completions", json={**CHAT, "model": "idle"}, headers=headers
                )
            # a call that reached no model costs no budget and is recorded as unavailable
            for pool in ("main", "idle"):
                remaining = await gw.gateway.budgets.remaining("intake", pool)
                assert remaining == pytest.approx(1000, abs=0.5), pool
    assert response.status_code == 503 and empty.status_code == 503
    message = response.json()["error"]["message"]
    assert "a:" in message and "b: HTTP 503" in message
    assert empty.json()["error"]["message"] == "pool idle has no ready replica; retry later"
    failed, unready = gw.records.of("llm.call")
    assert failed["decision"] == unready["decision"] == "unavailable"
    assert (failed["attributes"]["attempts"], unready["attributes"]["attempts"]) == (2, 0)
    assert "model_replica" not in unready["attributes"]


async def test_a_pool_with_no_ready_replica_is_503_by_pool_and_served_name() -> None:
    loading = ReplicaEndpoint("main", "main-0", "http://127.0.0.1:9", "org/chat", "org/model")
    async with running_gateway(StaticUpstreams([], loading=[loading])) as gw:
        headers = auth(gw.tokens.issue("intake", "intake-0"))
        async with httpx.AsyncClient(base_url=gw.url) as client:
            answers = [
                await client.post(
                    "/chat/completions", json={**CHAT, "model": name}, headers=headers
                )
                for name in ("main", "org/chat")
            ]
            unknown = await client.post(
                "/chat/completions", json={**CHAT, "model": "other"}, headers=headers
            )
            models = (await client.get("/models", headers=headers)).json()["data"]
    for answer in answers:
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "no_replica"
        assert "pool main has no ready replica" in error["message"]
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert [r["attributes"]["pool"] for r in gw.records.of("llm.call")[:2]] == ["main", "main"]
    assert [(m["id"], m["root"], m["ready_replicas"]) for m in models] == [("main", "org/model", 0)]


async def test_mid_stream_failure_ends_the_stream_with_an_error_event() -> None:
    async with (
        fake_replicas(FakeReplica("r0", "cut")) as (replica,),
        running_gateway(endpoints(replica)) as gw,
    ):
        headers = auth(gw.tokens.issue("intake", "intake-0"))
        body = {**CHAT, "stream": True}
        async with (
            httpx.AsyncClient(base_url=gw.url) as client,
            client.stream("POST", "/chat/completions", json=body, headers=headers) as resp,
        ):
            lines = [line async for line in resp.aiter_lines() if line.startswith("data: ")]
        last = json.loads(lines[-1][6:])
        assert last["error"]["code"] == "upstream_failed"
        assert len(replica.received) == 1  # bytes had gone out: not retried
        assert gw.records.of("llm.call")[0]["decision"] == "error"


async def test_an_agents_prompt_prefix_stays_on_one_replica() -> None:
    replicas = [FakeReplica("r0"), FakeReplica("r1"), FakeReplica("r2")]
    async with fake_replicas(*replicas), running_gateway(endpoints(*replicas)) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as client:
            for agent in range(8):
                headers = auth(gw.tokens.issue(f"agent{agent}", f"agent{agent}-0"))
                for question in range(3):
                    body = {
                        **CHAT,
                        "messages": [
                            {"role": "system", "content": f"handbook of agent {agent}"},
                            {"role": "user", "content": f"question {question}"},
                        ],
                    }
                    answer = await client.post("/chat/completions", json=body, headers=headers)
                    assert answer.status_code == 200
        homes: dict[str, set[str]] = {}
        for record in gw.records.of("llm.call"):
            homes.setdefault(record["agent"], set()).add(record["attributes"]["model_replica"])
        assert all(len(replicas) == 1 for replicas in homes.values()), homes
        assert len(set().union(*homes.values())) >= 2  # agents spread over the replicas


async def test_models_lists_only_the_pools_policy_allows() -> None:
    def policy(agent: str, obj: str, action: str) -> Answer:
        return Answer(obj == "model:main", "policy.csv:1")

    async with fake_replicas(FakeReplica("r0"), FakeReplica("r1")) as (r0, r1):
        upstreams = StaticUpstreams(
            [*endpoints(r0).endpoints("main"), *endpoints(r1, pool="large").endpoints("large")]
        )
        async with running_gateway(upstreams, policy=policy) as gw:
            headers = auth(gw.tokens.issue("intake", "intake-0"))
            async with httpx.AsyncClient(base_url=gw.url) as client:
                models = (await client.get("/models", headers=headers)).json()["data"]
                large = await client.post(
                    "/chat/completions", json={**CHAT, "model": "large"}, headers=headers
                )
    assert [(m["id"], m["ready_replicas"]) for m in models] == [("main", 1)]
    assert large.status_code == 403 and r1.received == []


async def test_a_port_in_use_is_a_config_error_naming_it() -> None:
    async with fake_replicas(FakeReplica("r0")) as (replica,):
        port = int(replica.base_url.rsplit(":", 1)[1])
        gateway = LLMGateway(
            GatewayConfig(port=port),
            upstreams=endpoints(replica),
            tokens=TokenBook(),
            record=lambda kind, **fields: None,
        )
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await gateway.run()


def test_old_budget_keys_are_refused_with_the_limits_toml_entries_to_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "agentd.toml"
    old.write_text(
        "[gateway]\nbudget_tokens = 200000\nbudget_window_s = 120.0\n"
        'budgets = { "underwriter/tiny" = 500000 }\n'
    )
    with pytest.raises(ConfigError) as refused:
        load_config(old)
    message = str(refused.value)
    for key in ("[gateway].budget_tokens", "[gateway].budget_window_s", "[gateway].budgets"):
        assert key in message
    # the same budgets, as limits.toml entries: tokens per window -> per_minute, burst
    assert 'agent = "*"\nmodel = "POOL"\nper_minute = 100000\nburst = 200000' in message
    assert 'agent = "underwriter"\nmodel = "tiny"\nper_minute = 250000\nburst = 500000' in message
    # budget_window_s alone (the old example config) set no budget: a warning, not an error
    old.write_text("[gateway]\nbudget_window_s = 60.0\n")
    with caplog.at_level("WARNING", logger="agentd.config"):
        assert load_config(old).config.gateway.port == 0
    assert "[gateway].budget_window_s is no longer read" in caplog.text


async def test_a_replicas_own_refusal_is_passed_through_and_costs_nothing() -> None:
    async with (
        fake_replicas(FakeReplica("r0", "reject")) as (replica,),
        running_gateway(endpoints(replica), limits=budget(1000, 60)) as gw,
    ):
        headers = auth(gw.tokens.issue("intake", "intake-0"))
        async with httpx.AsyncClient(base_url=gw.url) as client:
            answer = await client.post("/chat/completions", json=CHAT, headers=headers)
        assert answer.status_code == 400
        assert answer.json()["error"]["message"] == "prompt too long"
        assert len(replica.received) == 1  # a request error is not retried elsewhere
        assert await gw.gateway.budgets.remaining("intake", "main") == pytest.approx(1000, abs=1)
        (record,) = gw.records.of("llm.call")
        assert record["decision"] == "upstream_error" and "prompt too long" in record["reason"]


async def test_the_gateway_serves_https_with_the_configured_certificate(tmp_path: Path) -> None:
    from tests.security.support import self_signed

    tls = self_signed(tmp_path)
    async with (
        fake_replicas(FakeReplica("r0")) as (replica,),
        running_gateway(endpoints(replica), tls=tls.model_dump()) as gw,
    ):
        assert gw.url.startswith("https://127.0.0.1:")
        env = gw.gateway.worker_env("intake", "intake-0")
        assert env["AGENTD_LLM_CA_FILE"] == str(tls.ca_file)
        headers = auth(env["AGENTD_LLM_TOKEN"])
        trusting = ssl.create_default_context(cafile=str(tls.ca_file))
        async with httpx.AsyncClient(verify=trusting, headers=headers) as client:
            answer = await client.post(f"{gw.url}/chat/completions", json=CHAT)
        assert answer.status_code == 200, answer.text
        # a client that does not trust the CA is refused at the handshake, and plain HTTP too
        async with httpx.AsyncClient(headers=headers) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.post(f"{gw.url}/chat/completions", json=CHAT)
            plain = gw.url.replace("https://", "http://")
            with pytest.raises(httpx.HTTPError):
                await untrusting.post(f"{plain}/chat/completions", json=CHAT)
