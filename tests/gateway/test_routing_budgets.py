"""Replica choice (affinity under a load bound, round robin) and token budgets (limits.toml
model limits) with their buckets in memory."""

from __future__ import annotations

import json
import math
from collections import Counter

import anyio
import pytest

from agentd.errors import RateLimited
from agentd.gateway import (
    AffinityRouter,
    MemoryBucketStore,
    ReplicaEndpoint,
    RoundRobin,
    TokenBudgets,
    parse_call,
)
from agentd.policy import RateLimiter
from agentd.policy._limits import parse_limits

REPLICAS = [ReplicaEndpoint("main", f"r{i}", f"http://h{i}", "m", "m") for i in range(4)]


def test_same_key_goes_to_same_replica_and_keys_spread() -> None:
    router = AffinityRouter(load_factor=1.25)
    picks = {key: router.choose(REPLICAS, key).replica for key in (b"a", b"b", b"c", b"d", b"e")}
    again = {key: router.choose(REPLICAS, key).replica for key in picks}
    assert picks == again
    many = Counter(router.choose(REPLICAS, f"agent-{i}".encode()).replica for i in range(400))
    assert set(many) == {"r0", "r1", "r2", "r3"} and min(many.values()) > 50


def test_load_bound_moves_a_hot_key_elsewhere() -> None:
    router = AffinityRouter(load_factor=1.25)
    home = router.choose(REPLICAS, b"hot").replica
    placed = []
    for _ in range(8):  # eight concurrent calls with one key
        replica = router.choose(REPLICAS, b"hot").replica
        router.started(replica)
        placed.append(replica)
    counts = Counter(placed)
    assert placed[0] == home
    # the bound is ceil(1.25 * (n + 1) / 4): no replica holds more than 3 of 8
    assert max(counts.values()) <= 3 and len(counts) >= 3
    for replica in placed:
        router.finished(replica)
    assert router.outstanding == {}
    assert router.choose(REPLICAS, b"hot").replica == home


def test_no_key_means_least_outstanding() -> None:
    router = AffinityRouter()
    for replica in ("r0", "r1", "r3"):
        router.started(replica)
    assert router.choose(REPLICAS, None).replica == "r2"


def test_round_robin_turns() -> None:
    router = RoundRobin()
    assert [router.choose(REPLICAS, b"x").replica for _ in range(5)] == [
        "r0",
        "r1",
        "r2",
        "r3",
        "r0",
    ]


LIMITS = """
[[limit]]
agent = "*"
model = "main"
per_second = 10
burst = 100

[[limit]]
agent = "intake"
model = "big"
per_second = 100
burst = 1000
"""


@pytest.mark.anyio
async def test_budget_refills_at_its_rate_and_settles() -> None:
    now = [1000.0]
    limiter = RateLimiter(parse_limits("limits.toml", LIMITS))
    budgets = TokenBudgets(limiter.token_limit, MemoryBucketStore(), clock=lambda: now[0])
    async with anyio.create_task_group() as tg:
        await tg.start(budgets.run)
        held = await budgets.reserve("intake", "main", 80)
        with pytest.raises(RateLimited) as spent:
            await budgets.reserve("intake", "main", 40)
        # 20 left, 40 needed, 10 tokens/s
        assert spent.value.retry_after_s == pytest.approx(2.0)
        assert spent.value.rule == "limits.toml:2"
        held.settle(30)  # used 30 of 80: 50 back
        held.settle(0)  # only the first settle counts
        assert await budgets.remaining("intake", "main") == pytest.approx(70)
        now[0] += 1.0
        assert await budgets.remaining("intake", "main") == pytest.approx(80)
        assert await budgets.remaining("intake", "big") == 1000  # a named agent's own entry
        with pytest.raises(RateLimited, match="limits.toml:2") as never:
            await budgets.reserve("echo", "main", 101)
        assert math.isinf(never.value.retry_after_s)  # no wait helps: the gateway answers 400
        unlimited = await budgets.reserve("intake", "other", 10**9)  # no entry: not limited
        unlimited.settle(5)
        assert await budgets.remaining("intake", "other") is None
        tg.cancel_scope.cancel()


def test_prefix_key_covers_system_prompt_and_tools_only() -> None:
    def key(system: str, user: str, tools: list[object] | None = None) -> bytes:
        body: dict[str, object] = {
            "model": "m",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
        }
        if tools is not None:
            body["tools"] = tools
        return parse_call(
            json.dumps(body).encode(), "chat/completions", default_max_tokens=8
        ).prefix

    assert key("policy A", "q1") == key("policy A", "q2")
    assert key("policy A", "q1") != key("policy B", "q1")
    assert key("policy A", "q1") != key("policy A", "q1", [{"type": "function"}])
