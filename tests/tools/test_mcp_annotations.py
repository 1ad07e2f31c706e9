"""MCP tool annotations and the idempotency key: a trusted server's `readOnlyHint` /
`idempotentHint` tools are not claimed and stored (their rerun repeats no effect); the same
hints from an untrusted server are not believed, and its calls are deduplicated as any other.
A real SDK server (tests/tools/mcp_server.py) behind the launcher's socket, an in-process
gateway over a real nats-server, calls sent as a replica sends them."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from agentd.bus import Subjects
from agentd.config import McpServerConfig, ToolsConfig
from agentd.policy import DecisionPoint
from agentd.tools import MCP_LAUNCHER, McpMount, ToolGateway, ToolRegistry, mcp_connector
from agentd.tools._results import ResultStore
from tests.harness import REPO

from .support import Records

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SERVER = Path(__file__).with_name("mcp_server.py")
SERVERS = {"mine": "trusted", "wild": "untrusted"}
TOOLS = [f"{server}.{tool}" for server in SERVERS for tool in ("lookup", "touch", "echo")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Env:
    def __init__(self, nc: Any, subjects: Subjects, gateway: ToolGateway, records: Records):
        self.nc, self.subjects, self.gateway, self.records = nc, subjects, gateway, records

    async def call(self, tool: str, call_id: str) -> dict[str, Any]:
        body = {"args": {"text": "hi"}, "message_id": "m-1", "call_id": call_id, "run_id": "r"}
        subject = self.subjects.tool("reader", tool)
        reply = await self.nc.request(subject, json.dumps(body).encode(), timeout=20)
        answer: dict[str, Any] = json.loads(reply.data)
        return answer

    async def stored(self, call_id: str) -> Any:
        store = self.gateway._calls.store
        assert store is not None
        return await store.get(ResultStore.key("reader", "m-1", call_id))


@pytest.fixture
async def env(nats_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(REPO / "policies" / "model.conf", policies)
    rules = "".join(f"p, reader, tool:{tool}, call, allow\n" for tool in TOOLS)
    (policies / "policy.csv").write_text(rules)
    (policies / "constraints.toml").write_text("")
    (policies / "limits.toml").write_text("")
    registry = ToolRegistry()
    nc = await nats.connect(nats_url)
    subjects = Subjects(f"ann{os.getpid()}{tmp_path.name[-6:]}".replace("_", ""))
    records = Records()
    gateway = ToolGateway(
        nc,
        nc.jetstream(),
        subjects,
        point=DecisionPoint.from_dir(policies),
        registry=registry,
        allowed_tools={"reader": TOOLS}.get,
        record=records,
        config=ToolsConfig(),
    )
    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(anyio.create_task_group())
        for rank, (server, trust) in enumerate(SERVERS.items()):
            address = f"@agentd-test-ann-{os.getpid()}-{tmp_path.name}-{server}"
            argv = [sys.executable, "-I", "-S", MCP_LAUNCHER, address, "--"]
            proc = await anyio.open_process(
                [*argv, sys.executable, str(SERVER)], stdin=None, stdout=None, stderr=None
            )
            stack.push_async_callback(proc.aclose)
            stack.callback(proc.kill)
            config = McpServerConfig(command="python", trust=trust)
            connector = mcp_connector(server, config, address=address)
            mount = McpMount(server, config, registry, connector, rank=rank)
            await tg.start(mount.run)
            with anyio.fail_after(20):
                await mount.ready.wait()
        await tg.start(gateway.run)
        try:
            yield Env(nc, subjects, gateway, records)
        finally:
            await gateway.shutdown()
            tg.cancel_scope.cancel()
    await nc.close()


@pytest.mark.parametrize(
    ("tool", "hint"), [("lookup", "readOnlyHint"), ("touch", "idempotentHint")]
)
async def test_a_trusted_servers_annotated_tool_runs_again_and_is_not_stored(
    env: Env, tool: str, hint: str
) -> None:
    first = await env.call(f"mine.{tool}", "call-1")
    again = await env.call(f"mine.{tool}", "call-1")  # a rerun: the same key
    assert (first["result"], first["replayed"]) == ("1:hi", False)
    assert (again["result"], again["replayed"]) == ("2:hi", False)  # it ran again
    assert await env.stored("call-1") is None  # never claimed nor stored
    executed = env.records.of("tool.executed")
    assert [r["attributes"]["not_stored"] for r in executed] == [hint, hint]
    assert all(r["decision"] == "ok" and r["rule"].startswith("policy.csv:") for r in executed)


async def test_the_same_hints_from_an_untrusted_server_are_not_believed(env: Env) -> None:
    for tool in ("lookup", "touch"):
        first = await env.call(f"wild.{tool}", f"{tool}-1")
        again = await env.call(f"wild.{tool}", f"{tool}-1")
        assert (first["result"], first["replayed"]) == ("1:hi", False)
        assert (again["result"], again["replayed"]) == ("1:hi", True)  # the stored result
        assert (await env.stored(f"{tool}-1")).state == "done"
    assert all("not_stored" not in r.get("attributes", {}) for r in env.records.items)


async def test_a_trusted_servers_tool_without_hints_is_deduplicated(env: Env) -> None:
    first = await env.call("mine.echo", "echo-1")
    again = await env.call("mine.echo", "echo-1")
    assert (first["result"], again["result"], again["replayed"]) == ("hi", "hi", True)
    assert (await env.stored("echo-1")).state == "done"
