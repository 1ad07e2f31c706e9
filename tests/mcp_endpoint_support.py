"""A daemon with agentd's MCP endpoint on, and an outside MCP client (the official SDK's) for
tests/test_mcp_endpoint_daemon.py and tests/security/test_mcp_endpoint.py."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from agentd.api import call_api, register_with_token
from agentd.bus import Credentials, connect
from tests.harness import (
    REPO,
    DaemonProcess,
    decision_records,
    free_port,
    running_daemon,
    write_config,
)

__all__ = [
    "PARTNER_SPEC",
    "agent_call",
    "at_least",
    "mcp_daemon",
    "mcp_session",
    "register_partner",
    "replica_token",
]

# the registered partner may ask for credit.score (allowed) and loan.approve (policy denies it)
PARTNER_SPEC = {
    "version": "1.0.0",
    "description": "an outside agent that speaks MCP",
    "tools": ["credit.score", "loan.approve"],
}
EXTRA_POLICY = """
# tests: agentd's MCP endpoint
p, ext:partner, api:register, register, allow
p, ext:lender, api:register, register, allow
p, ext:gone, api:register, register, allow
p, ext:mallory, api:register, register, allow
p, ext:partner, tool:credit.score, call, allow
p, ext:partner, tool:loan.approve, call, deny
p, ext:mallory, tool:credit.score, call, allow
p, ext:lender, tool:loan.approve, call, allow
p, ext:lender, tool:credit.score, call, allow
p, scout, tool:credit.score, call, allow
p, ext:gone, tool:credit.score, call, allow
"""


# a replica that hands out its own LLM token, as any code in a replica could
SCOUT_GRAPH = """
import os
from langgraph.graph import END, START, StateGraph

def leak(state):
    return {"token": os.environ.get("AGENTD_LLM_TOKEN")}

builder = StateGraph(dict)
builder.add_node("leak", leak)
builder.add_edge(START, "leak")
builder.add_edge("leak", END)
graph = builder.compile()
"""
SCOUT_SPEC = """
name = "scout"
graph = "graph:graph"
checkpoint = false
autoscale = false
tools = ["credit.score", "loan.approve", "sql.query", "no.such"]
[replicas]
initial = 1
min = 1
max = 1
"""


@contextmanager
def mcp_daemon(root: Path) -> Iterator[tuple[DaemonProcess, str]]:
    """A daemon (identity on, policy enforced) running `scout` (one replica) with the example
    tools, and its MCP endpoint on a free loopback port."""
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as f:
        f.write(EXTRA_POLICY)
    agents = root / "agents"
    (agents / "scout").mkdir(parents=True)
    (agents / "scout" / "graph.py").write_text(SCOUT_GRAPH)
    (agents / "scout" / "agent.toml").write_text(SCOUT_SPEC)
    port = free_port()
    config = write_config(
        root,
        agents_dir=agents,
        policy="enforce",
        extra=(
            "[autoscale]\nenabled = false\n[identity]\nlease_s = 3600\n"
            f'[tools]\ndir = "{REPO / "tools"}"\napproval_timeout_s = 60.0\n'
            f'[tools.mcp_endpoint]\nenabled = true\nlisten = "127.0.0.1:{port}"\n'
            "max_request_bytes = 65536\n"
        ),
    )
    text = config.read_text().replace(f'dir = "{REPO / "policies"}"', f'dir = "{policies}"')
    config.write_text(text)
    with running_daemon(config) as daemon:
        yield daemon, f"http://127.0.0.1:{port}/mcp"
        assert daemon.stop() == 0, daemon.log()


@asynccontextmanager
async def mcp_session(url: str, token: str | None) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session on `url` with `token` as its bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=60)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


_REGISTERED: dict[tuple[str, str], tuple[Credentials, str]] = {}


async def register_partner(
    daemon: DaemonProcess, name: str, tools: list[str] | None = None
) -> tuple[Credentials, str]:
    """Register `name` as an external agent (once per daemon); its credentials and its (LLM
    and MCP) token."""
    known = _REGISTERED.get((daemon.url, name))
    if known is not None:
        return known
    bootstrap = (daemon.state_dir / "credentials" / "bootstrap.token").read_text().strip()
    spec = {**PARTNER_SPEC, "tools": tools if tools is not None else PARTNER_SPEC["tools"]}
    creds, _ = await register_with_token(daemon.url, token=bootstrap, name=name, spec=spec)
    nc = await connect(daemon.url, name=name, credentials=creds)
    try:
        beat = await call_api(nc, "heartbeat", name)
    finally:
        await nc.close()
    token = beat["llm_token"]
    assert isinstance(token, str) and token.startswith("agentd-")
    _REGISTERED[(daemon.url, name)] = creds, token
    return creds, token


async def agent_call(
    daemon: DaemonProcess, creds: Credentials, name: str, tool: str, args: dict[str, Any]
) -> dict[str, Any]:
    """The same call an agent makes: a request on agentd.tool.<name>.<tool> as `name`."""
    nc = await connect(daemon.url, name=name, credentials=creds)
    try:
        body = {"args": args, "message_id": f"nats-{time.monotonic_ns()}", "call_id": "c1"}
        reply = await nc.request(f"agentd.tool.{name}.{tool}", json.dumps(body).encode(), 30)
    finally:
        await nc.close()
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


def replica_token(daemon: DaemonProcess, agent: str = "scout") -> str:
    """The AGENTD_LLM_TOKEN of a running replica of `agent`, as its own code reads it (the
    daemon hands it over on the replica's stdin, not in an environment /proc shows)."""
    out = daemon.agentctl("send", agent, "{}", "--wait", timeout_s=60)
    assert out.returncode == 0, out.stderr
    token = json.loads(out.stdout)["token"]
    assert isinstance(token, str) and token.startswith("agentd-"), out.stdout
    return token


def at_least(
    daemon: DaemonProcess, kind: str, predicate: Callable[[dict[str, Any]], bool], count: int
) -> list[dict[str, Any]]:
    """Records of `kind` that satisfy `predicate`, once there are `count` of them (they may
    come in several batches of the recorder), or what there is after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        found = [r for r in decision_records(daemon.state_dir, kind) if predicate(r)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
