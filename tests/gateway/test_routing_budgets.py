"""Replica choice (affinity under a load bound, round robin) and token budgets, in memory."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from agentd.errors import RateLimited
from agentd.gateway import AffinityRouter, BudgetBook, ReplicaEndpoint, RoundRobin, parse_call

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


def test_budget_refills_over_its_window_and_settles() -> None:
    now = [0.0]
    book = BudgetBook(100, 10.0, {"intake/big": 1000}, clock=lambda: now[0])
    held = book.reserve("intake", "main", 80)
    with pytest.raises(RateLimited) as spent:
        book.reserve("intake", "main", 40)
    # 20 left, 40 needed, 10 tokens/s
    assert spent.value.retry_after_s == pytest.approx(2.0)
    held.settle(30)  # used 30 of 80: 50 back
    held.settle(0)  # only the first settle counts
    assert book.remaining("intake", "main") == pytest.approx(70)
    now[0] = 1.0
    assert book.remaining("intake", "main") == pytest.approx(80)
    assert book.capacity("intake", "big") == 1000 and book.capacity("echo", "main") == 100
    with pytest.raises(RateLimited, match="can never fit") as never:
        book.reserve("echo", "main", 101)
    assert math.isinf(never.value.retry_after_s)  # no wait helps: the gateway answers 400
    unlimited = BudgetBook(None, 10.0)
    unlimited.reserve("intake", "main", 10**9).settle(5)
    assert unlimited.remaining("intake", "main") is None


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
