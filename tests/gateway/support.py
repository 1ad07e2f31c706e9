"""Running a gateway inside a test: real aiohttp server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from agentd.config import GatewayConfig
from agentd.gateway import (
    BucketStore,
    LLMGateway,
    MemoryBucketStore,
    PolicyCheck,
    ReplicaChooser,
    TokenBook,
    TokenBudgets,
    Upstreams,
)
from agentd.policy import RateLimiter
from agentd.policy._limits import parse_limits


def budget(tokens: int, window_s: float, *, agent: str = "*", pool: str = "main") -> str:
    """limits.toml text for `tokens` per `window_s` of (agent, pool), a full bucket of `tokens`
    to start with: what `[gateway].budget_tokens` used to say."""
    return (
        f'[[limit]]\nagent = "{agent}"\nmodel = "{pool}"\n'
        f"per_second = {tokens / window_s}\nburst = {tokens}\n"
    )


def token_budgets(limits: str, store: BucketStore | None = None) -> TokenBudgets:
    """The gateway's budgets for limits.toml text, in `store` (default: in memory)."""
    limiter = RateLimiter(parse_limits("limits.toml", limits))
    return TokenBudgets(limiter.token_limit, store or MemoryBucketStore())


@dataclass
class Records:
    """A stand-in for the daemon's recorder: keeps every `record(kind, **fields)`."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, kind: str, **fields: Any) -> None:
        self.items.append({"kind": kind, **fields})

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.items if r["kind"] == kind]


@dataclass
class Running:
    gateway: LLMGateway
    url: str
    tokens: TokenBook
    records: Records


@asynccontextmanager
async def running_gateway(
    upstreams: Upstreams,
    *,
    policy: PolicyCheck | None = None,
    chooser: ReplicaChooser | None = None,
    limits: str | TokenBudgets | None = None,
    **config: Any,
) -> AsyncIterator[Running]:
    tokens = TokenBook()
    records = Records()
    gateway = LLMGateway(
        GatewayConfig(**{"port": 0, **config}),
        upstreams=upstreams,
        tokens=tokens,
        record=records,
        policy=policy,
        chooser=chooser,
        budgets=token_budgets(limits) if isinstance(limits, str) else limits,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.run)
        assert gateway.url is not None
        try:
            yield Running(gateway, gateway.url, tokens, records)
        finally:
            await gateway.shutdown()
