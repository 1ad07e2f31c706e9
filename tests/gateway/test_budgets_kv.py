"""Token budgets in a real JetStream KV bucket: two gateways (two hosts of a cluster) spend from
one bucket and together never past it, the spent budget survives a restart of the gateway and of
the nats-server, and a policy reload changes the limit for the next call. The control shows what
two gateways with buckets of their own (the old per-process BudgetBook) let through."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from agentd.bus import connect, jetstream
from agentd.errors import RateLimited
from agentd.gateway import BucketStore, MemoryBucketStore, TokenBudgets, open_budget_store
from agentd.policy import DecisionPoint
from tests.gateway.support import token_budgets
from tests.harness import REPO, free_port, nats_server

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BUCKET = "agentd_budgets"
# 1,000 tokens, refilled at 1 a minute: nothing refills while a test runs
LIMITS = '[[limit]]\nagent = "intake"\nmodel = "main"\nper_minute = 1\nburst = 1000\n'


@asynccontextmanager
async def kv_store(url: str) -> AsyncIterator[BucketStore]:
    """What one daemon has: its own NATS connection and the budgets bucket."""
    nc = await connect(url, name="test-budgets", reconnect=False)
    try:
        yield await open_budget_store(jetstream(nc), BUCKET)
    finally:
        await nc.close()


@asynccontextmanager
async def running(budgets: TokenBudgets) -> AsyncIterator[TokenBudgets]:
    async with anyio.create_task_group() as tg:
        await tg.start(budgets.run)
        try:
            yield budgets
        finally:
            await budgets.flush()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def two_hosts(url: str) -> AsyncIterator[tuple[TokenBudgets, TokenBudgets]]:
    """Two gateways, each with its own connection, on the one budgets bucket (two daemons)."""
    async with (
        kv_store(url) as store_a,
        kv_store(url) as store_b,
        running(token_budgets(LIMITS, store_a)) as a,
        running(token_budgets(LIMITS, store_b)) as b,
    ):
        yield a, b


async def spend_concurrently(gateways: list[TokenBudgets], calls: int, tokens: int) -> int:
    """`calls` reservations of `tokens`, all at once, spread over `gateways`: how many got in."""
    granted = 0

    async def one(index: int) -> None:
        nonlocal granted
        try:
            await gateways[index % len(gateways)].reserve("intake", "main", tokens)
            granted += 1
        except RateLimited:
            pass

    async with anyio.create_task_group() as tg:
        for index in range(calls):
            tg.start_soon(one, index)
    return granted


async def test_two_gateways_on_one_bucket_share_one_budget(tmp_path: Path) -> None:
    with nats_server(tmp_path / "nats") as url:
        async with two_hosts(url) as (a, b):
            # 30 calls of 100 tokens at once, half through each: 10 fit in 1,000
            assert await spend_concurrently([a, b], 30, 100) == 10
            for gateway in (a, b):  # both see the one bucket, spent
                left = await gateway.remaining("intake", "main")
                assert left is not None and left < 5
            # a pool without a limit: nothing held, nothing to settle
            assert (await a.reserve("intake", "unlimited", 10**9)).budgets is None


async def test_control_two_gateways_with_buckets_of_their_own_spend_twice(
    tmp_path: Path,
) -> None:
    async with (
        running(token_budgets(LIMITS, MemoryBucketStore())) as a,
        running(token_budgets(LIMITS, MemoryBucketStore())) as b,
    ):
        assert await spend_concurrently([a, b], 30, 100) == 20  # twice the budget


async def test_a_settlement_on_one_host_is_spendable_on_the_other(tmp_path: Path) -> None:
    with nats_server(tmp_path / "nats") as url:
        async with two_hosts(url) as (a, b):
            reservation = await a.reserve("intake", "main", 900)
            with pytest.raises(RateLimited):
                await b.reserve("intake", "main", 500)  # b read a's state: 100 left
            reservation.settle(100)  # the call used 100: 800 back
            await a.flush()
            await b.reserve("intake", "main", 500)  # b's cache is stale; it reads again
            left = await a.remaining("intake", "main")
            assert left is not None and 399 < left < 401


async def test_the_spent_budget_survives_a_restart_of_the_gateway_and_the_server(
    tmp_path: Path,
) -> None:
    port = free_port()
    with nats_server(tmp_path / "nats", port) as url:
        async with kv_store(url) as store, running(token_budgets(LIMITS, store)) as gateway:
            (await gateway.reserve("intake", "main", 700)).settle(600)
    # a new server on the same store, a new gateway: the bucket is where it was
    with nats_server(tmp_path / "nats", port) as url:
        async with kv_store(url) as store, running(token_budgets(LIMITS, store)) as gateway:
            left = await gateway.remaining("intake", "main")
            assert left is not None and 399 < left < 401
            with pytest.raises(RateLimited) as refused:
                await gateway.reserve("intake", "main", 500)
            assert refused.value.retry_after_s > 60  # 100 short at 1 token a minute


async def test_a_policy_reload_changes_the_limit_for_the_next_call(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    limits = policies / "limits.toml"
    original = limits.read_text()
    limits.write_text(original + LIMITS)
    point = DecisionPoint.from_dir(policies)
    with nats_server(tmp_path / "nats") as url:
        async with kv_store(url) as store:
            budgets = TokenBudgets(point.limiter.token_limit, store)
            async with running(budgets):
                await budgets.reserve("intake", "main", 300)  # 700 left
                limits.write_text(original + LIMITS.replace("burst = 1000", "burst = 200"))
                point.reload()
                with pytest.raises(RateLimited) as never:
                    await budgets.reserve("intake", "main", 300)  # above the new burst
                assert never.value.retry_after_s == float("inf")
                line = original.count("\n") + 1  # the [[limit]] header of the appended entry
                assert never.value.rule == f"limits.toml:{line}"
                left = await budgets.remaining("intake", "main")
                assert left is not None and 199 < left <= 200  # capped, never refilled
                limits.write_text(original)  # no limit for intake on main any more
                point.reload()
                assert (await budgets.reserve("intake", "main", 10_000)).budgets is None
