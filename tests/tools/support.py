"""A tool gateway running in-process against a real nats-server, and agents calling it through
a real `AgentContext`, as a worker's graph does."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import nats
from nats.aio.client import Client

from agentd.bus import Subjects, new_id
from agentd.config import ToolsConfig
from agentd.policy import DecisionPoint
from agentd.tools import ToolGateway, ToolRegistry
from agentd.trace import DecisionRecord
from agentd.worker import AgentContext, RunInfo
from tests.harness import REPO, pid_alive

EXAMPLE_TOOLS = REPO / "tools"
EXAMPLE_POLICY = REPO / "policies"

# the `tools` lists of the agents' specs, as the daemon would pass them
AGENT_TOOLS: dict[str, list[str]] = {
    "intake": ["credit.score", "http.fetch"],
    "underwriter": ["credit.score", "http.fetch", "loan.approve", "sql.query"],
    # loan.approve is in compliance's spec, but the policy denies it: the layers are separate
    "compliance": ["credit.score", "sql.query", "loan.approve"],
    "echo": [],
}

_FIELDS = set(DecisionRecord.model_fields)


class Records:
    """A list-collecting `record(kind, **fields)` that validates each record as the daemon's
    recorder does, and lets a test wait for a kind (an event, not a sleep)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._changed = anyio.Event()

    def __call__(self, kind: str, **fields: Any) -> None:
        known = {k: v for k, v in fields.items() if k in _FIELDS and v is not None}
        extra = {k: v for k, v in fields.items() if k not in _FIELDS and v is not None}
        if extra:
            known["attributes"] = extra
        record = DecisionRecord.model_validate({"kind": kind, **known})  # raises if malformed
        self.items.append(record.model_dump(exclude_none=True))
        self._changed.set()
        self._changed = anyio.Event()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.items if r["kind"] == kind]

    def kinds(self) -> list[str]:
        return [r["kind"] for r in self.items]

    async def wait_for(self, kind: str, count: int = 1, timeout_s: float = 10.0) -> dict[str, Any]:
        """The `count`-th record of `kind`, once it exists."""
        with anyio.fail_after(timeout_s):
            while len(self.of(kind)) < count:
                await self._changed.wait()
        return self.of(kind)[count - 1]


@dataclass
class GatewayEnv:
    nc: Client
    subjects: Subjects
    gateway: ToolGateway
    records: Records

    def context(self, agent: str) -> AgentContext:
        """What a replica of `agent` hands its graph."""
        return AgentContext(self.nc, self.subjects, agent, f"{agent}-0")

    async def raw_call(
        self, agent: str, tool: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """A tool request as bytes on the wire, and the parsed reply."""
        reply = await self.nc.request(
            self.subjects.tool(agent, tool), json.dumps(body).encode(), timeout=10, headers=headers
        )
        answer: dict[str, Any] = json.loads(reply.data)
        return answer


@contextlib.contextmanager
def in_run(ctx: AgentContext, message_id: str | None = None) -> Iterator[RunInfo]:
    """Be inside a run, as the worker is while the graph runs (a rerun: same message id)."""
    info = RunInfo(new_id(), message_id or new_id(), "conversation-1", "tester")
    token = ctx._enter(info)
    try:
        yield info
    finally:
        ctx._exit(token)


@contextlib.asynccontextmanager
async def running_gateway(
    url: str,
    *,
    point: DecisionPoint | None,
    tools_dir: Path = EXAMPLE_TOOLS,
    config: ToolsConfig | None = None,
    agent_tools: dict[str, list[str]] | None = None,
    prefix: str | None = None,
) -> AsyncIterator[GatewayEnv]:
    """A gateway under its own subject prefix (so its own results bucket) for one test."""
    nc = await nats.connect(url)
    subjects = Subjects(prefix or f"t{uuid.uuid4().hex[:10]}")
    records = Records()
    specs = AGENT_TOOLS if agent_tools is None else agent_tools
    gateway = ToolGateway(
        nc,
        nc.jetstream(),
        subjects,
        point=point,
        registry=ToolRegistry.load(tools_dir),
        allowed_tools=specs.get,
        record=records,
        config=config or ToolsConfig(),
        drain_grace_s=2.0,
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(gateway.run)
            try:
                yield GatewayEnv(nc, subjects, gateway, records)
            finally:
                await gateway.shutdown()
                await gateway.shutdown()  # repeatable
    finally:
        await nc.close()


def ledger_lines(path: Path) -> list[str]:
    """Loans the example loan.approve tool paid out (its side effect)."""
    return path.read_text().splitlines() if path.exists() else []


def wait_dead(*pids: int, timeout_s: float = 2.0) -> bool:
    """Whether every pid is gone within `timeout_s` (SIGKILL is delivered asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
