"""Running a gateway inside a test: real aiohttp server on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from agentd.config import GatewayConfig
from agentd.gateway import (
    LLMGateway,
    PolicyCheck,
    ReplicaChooser,
    TokenBook,
    TokenLimits,
    Upstreams,
)


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
    limits: TokenLimits | None = None,
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
        limits=limits,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(gateway.run)
        assert gateway.url is not None
        try:
            yield Running(gateway, gateway.url, tokens, records)
        finally:
            await gateway.shutdown()
