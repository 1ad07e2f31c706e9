"""A call reserves the most it can generate: prompt lists, n and best_of count, a missing
max_tokens is bounded, and limits.toml's model limits are enforced, against a fake model that
always runs every sequence to max_tokens (so the tokens it reports are what a model could do).

The same attack runs through the daemon in tests/security/test_llm_budgets.py, and through
real vLLM in test_gateway_vllm.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from agentd.gateway import MalformedRequest, ReplicaEndpoint, StaticUpstreams, parse_call
from agentd.gateway._protocol import CallKind, CallRequest
from tests.gateway.fake_openai import FakeReplica, fake_replicas
from tests.gateway.support import budget, running_gateway

pytestmark = pytest.mark.anyio

BUDGET = 2000
# the attack: 200 prompts x 500 tokens, twice, against a 2,000-token budget
ATTACK = {"model": "main", "prompt": [f"story {i}" for i in range(200)], "max_tokens": 500}
LIMITS = """
[[limit]]
agent = "intake"
model = "main"
per_minute = 60
burst = 1000
"""


def parsed(body: dict[str, Any], kind: CallKind = "completions", **kw: Any) -> CallRequest:
    return parse_call(json.dumps(body).encode(), kind, default_max_tokens=64, **kw)


def upstream(replica: FakeReplica) -> StaticUpstreams:
    return StaticUpstreams(
        [ReplicaEndpoint("main", replica.name, replica.base_url, "main-served", "org/m", "r1")]
    )


def generated(records: list[dict[str, Any]]) -> int:
    return sum(r["attributes"].get("tokens_out") or 0 for r in records)


@pytest.mark.parametrize(
    ("body", "sequences"),
    [
        ({"prompt": "one"}, 1),
        ({"prompt": [1, 2, 3]}, 1),  # one prompt as token ids
        ({"prompt": ["a", "b", "c"]}, 3),
        ({"prompt": [[1, 2], [3], [4, 5, 6], [7]]}, 4),
        ({"prompt": ["a", "b"], "n": 3}, 6),
        ({"prompt": "a", "n": 2, "best_of": 5}, 5),
        ({"prompt": "a", "n": 4, "use_beam_search": True}, 4),
        ({"prompt": ["a", "b"], "prompt_embeds": ["AAAA", "BBBB"]}, 4),
        ({"prompt_embeds": "AAAA"}, 1),
    ],
)
def test_every_multiplier_of_a_completion_counts(body: dict[str, Any], sequences: int) -> None:
    call = parsed({"model": "m", "max_tokens": 10, **body})
    assert call.sequences == sequences
    assert call.token_estimate >= 10 * sequences


def test_a_chat_reserves_the_larger_of_its_two_limits_and_a_missing_one_is_bounded() -> None:
    messages = [{"role": "user", "content": "hi"}]
    both = parsed(
        {
            "model": "m",
            "messages": messages,
            "max_tokens": 900,
            "max_completion_tokens": 10,
            "n": 2,
        },
        "chat/completions",
    )
    assert both.max_tokens == 900 and both.sequences == 2
    neither = parsed({"model": "m", "messages": messages}, "chat/completions")
    # the gateway's default is written into the body, so the server is bound by it too
    assert neither.max_tokens == 64 and json.loads(neither.for_model("m"))["max_tokens"] == 64


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ["a", [1, 2]]}, "prompt"),  # mixed shapes
        ({"prompt": [[1, 2], []]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": "a", "n": 1.5}, "n"),
        ({"prompt": "a", "best_of": "9"}, "best_of"),
        ({"prompt": "a", "use_beam_search": "yes"}, "use_beam_search"),
        ({"prompt": "a", "prompt_embeds": 7}, "prompt_embeds"),
        ({"prompt": [f"p{i}" for i in range(65)]}, "prompt"),  # over the per-call cap
        ({"prompt": "a", "n": 65}, "n"),
    ],
)
def test_what_cannot_be_bounded_or_exceeds_the_cap_is_refused(
    body: dict[str, Any], param: str
) -> None:
    with pytest.raises(MalformedRequest) as refused:
        parsed({"model": "m", "max_tokens": 1, **body}, max_sequences=64)
    assert refused.value.param == param


async def test_prompt_lists_n_and_best_of_cannot_exceed_the_budget() -> None:
    async with (
        fake_replicas(FakeReplica("r0", generate_max=True)) as (replica,),
        running_gateway(
            upstream(replica),
            limits=budget(BUDGET, 3600),
            max_sequences_per_call=1000,
        ) as gw,
    ):
        headers = {"Authorization": f"Bearer {gw.tokens.issue('intake', 'intake-0')}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers) as client:
            answers = [await client.post("/completions", json=ATTACK) for _ in range(2)]
            by_n = await client.post(
                "/completions", json={"model": "main", "prompt": "a", "n": 8, "max_tokens": 500}
            )
            by_best_of = await client.post(
                "/completions",
                json={"model": "main", "prompt": "a", "best_of": 8, "max_tokens": 500},
            )
            within = await client.post(
                "/completions", json={"model": "main", "prompt": ["a", "b", "c"], "max_tokens": 100}
            )
        for refused in (*answers, by_n, by_best_of):
            # larger than the whole budget: 400, never worth a retry (not 429 + Retry-After)
            assert refused.status_code == 400, refused.text
            assert refused.headers["x-should-retry"] == "false"
            assert "lower max_tokens" in refused.json()["error"]["message"]
        assert within.status_code == 200, within.text
        assert len(within.json()["choices"]) == 3
        calls = gw.records.of("llm.call")
        assert [r["decision"] for r in calls] == ["exceeds_limit"] * 4 + ["ok"]
        assert calls[0]["attributes"]["sequences"] == 200
        assert generated(calls) == 300 <= BUDGET
        assert len(replica.received) == 1  # nothing refused reached the model


async def test_control_the_old_reservation_lets_the_attack_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # n x max_tokens, as the gateway reserved before: the prompts of a list were not counted
    def old_estimate(self: CallRequest) -> int:
        return len(self.raw) // 4 + self.max_tokens * self.choices

    monkeypatch.setattr(CallRequest, "token_estimate", property(old_estimate))
    async with (
        fake_replicas(FakeReplica("r0", generate_max=True)) as (replica,),
        running_gateway(
            upstream(replica),
            limits=budget(BUDGET, 3600),
            max_sequences_per_call=1000,
        ) as gw,
    ):
        headers = {"Authorization": f"Bearer {gw.tokens.issue('intake', 'intake-0')}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers) as client:
            first = await client.post("/completions", json=ATTACK)
        assert first.status_code == 200, first.text
        assert generated(gw.records.of("llm.call")) == 100_000 > BUDGET


async def test_a_limits_toml_model_limit_is_enforced_with_retry_after_and_a_record() -> None:
    async with (
        fake_replicas(FakeReplica("r0", generate_max=True)) as (replica,),
        running_gateway(upstream(replica), limits=LIMITS) as gw,
    ):
        headers = {"Authorization": f"Bearer {gw.tokens.issue('intake', 'intake-0')}"}
        other = {"Authorization": f"Bearer {gw.tokens.issue('echo', 'echo-0')}"}
        body = {"model": "main", "prompt": ["a", "b"], "max_tokens": 300}
        async with httpx.AsyncClient(base_url=gw.url) as client:
            first = await client.post("/completions", json=body, headers=headers)
            second = await client.post("/completions", json=body, headers=headers)
            too_big = await client.post(
                "/completions", json={**body, "n": 4}, headers=headers
            )  # 2,400 tokens: more than the burst of 1,000
            unlimited = await client.post("/completions", json=body, headers=other)
        assert first.status_code == 200, first.text
        assert second.status_code == 429, second.text
        assert second.json()["error"]["code"] == "rate_limited"
        # 602 used of 1,000; 600 + the prompt estimate asked; it refills 1 token a second
        assert int(second.headers["Retry-After"]) >= 150
        assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "exceeds_limit"
        assert unlimited.status_code == 200  # an agent without an entry is not limited
    records = gw.records.of("llm.call")
    limited = [r for r in records if r["decision"] == "rate_limited"]
    assert len(limited) == 1 and limited[0]["rule"] == "limits.toml:2"
    assert limited[0]["attributes"]["retry_after_s"] > 0
    assert [r["rule"] for r in records if r["decision"] == "exceeds_limit"] == ["limits.toml:2"]


async def test_a_call_without_max_tokens_reserves_the_default_the_server_is_told() -> None:
    async with (
        fake_replicas(FakeReplica("r0", generate_max=True)) as (replica,),
        running_gateway(
            upstream(replica), limits=budget(BUDGET, 3600), default_max_tokens=900
        ) as gw,
    ):
        headers = {"Authorization": f"Bearer {gw.tokens.issue('intake', 'intake-0')}"}
        async with httpx.AsyncClient(base_url=gw.url, headers=headers) as client:
            first = await client.post("/completions", json={"model": "main", "prompt": ["a", "b"]})
            third = await client.post("/completions", json={"model": "main", "prompt": "c"})
        assert first.status_code == 200 and replica.received[0]["max_tokens"] == 900
        assert third.status_code == 429  # 1,800 + prompts used; 900 more would overspend
    assert generated(gw.records.of("llm.call")) == 1800 <= BUDGET
