"""agentd's MCP endpoint under attack: a token speaks for the identity it was issued to and
nothing in the request changes that; bodies are bounded before MCP parses them.

Each attack has its control: the same request through the same endpoint code with the
protection off (every token mapped to the victim; no body bound) goes through."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import nats
import pytest

from agentd.bus import Subjects
from agentd.config import McpEndpointConfig, ToolsConfig
from agentd.tools import McpEndpoint, ToolRegistry
from agentd.tools._mcp_guard import McpCaller
from tests.harness import REPO, DaemonProcess, free_port
from tests.mcp_endpoint_support import at_least, mcp_daemon, mcp_session, register_partner
from tests.security.support import records_where

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

APPLICANT = "A-4711"
LOAN = {"applicant_id": APPLICANT, "amount": 500.0, "payee": "acct-1001"}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
LIMIT = 65536  # [tools.mcp_endpoint].max_request_bytes of the daemon under test


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str]]:
    with mcp_daemon(tmp_path_factory.mktemp("mcp-security")) as daemon_and_url:
        yield daemon_and_url


@asynccontextmanager
async def endpoint_without_identity(
    daemon: DaemonProcess, victim: str, *, max_request_bytes: int = LIMIT
) -> AsyncIterator[str]:
    """The endpoint's own code against the daemon's tool gateway, with the identity mapping
    bypassed: whatever token comes, it speaks for `victim`. The control of the attacks."""
    nc = await nats.connect(daemon.url, **daemon.nats_options())
    endpoint = McpEndpoint(
        nc,
        Subjects("agentd"),
        config=McpEndpointConfig(
            enabled=True,
            listen=f"127.0.0.1:{free_port()}",
            max_request_bytes=max_request_bytes,
        ),
        tools=ToolsConfig(),
        registry=ToolRegistry.load(REPO / "tools"),
        allowed_tools=lambda agent: ["credit.score", "loan.approve"],
        authenticate=lambda token: McpCaller(victim, "bypassed"),
        record=lambda kind, **fields: None,
    )
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(endpoint.run)
            assert endpoint.url is not None
            yield endpoint.url
            await endpoint.shutdown()
    finally:
        await nc.close()


async def test_a_token_cannot_call_the_tools_of_another_agent(
    served: tuple[DaemonProcess, str],
) -> None:
    daemon, url = served
    _, lender = await register_partner(daemon, "lender", tools=["loan.approve", "credit.score"])
    _, mallory = await register_partner(daemon, "mallory", tools=["credit.score"])
    async with mcp_session(url, mallory) as session:
        listed = {t.name for t in (await session.list_tools()).tools}
        # the victim's tool, asked for plainly, with claims of being the victim, and under a
        # name that would put the victim in the subject
        plain = await session.call_tool("loan.approve", LOAN)
        claimed = await session.call_tool(
            "loan.approve", LOAN, meta={"agent": "lender", "identity": "lender"}
        )
        smuggled = await session.call_tool("lender.loan.approve", LOAN)
        wildcard = await session.call_tool(">", LOAN)
    assert listed == {"credit.score"}
    for result in (plain, claimed):
        assert result.isError
        error = result.structuredContent["error"]  # type: ignore[index]
        assert error["code"] == "policy_denied" and error["rule"] == "agent spec mallory: tools"
    assert smuggled.isError
    assert smuggled.structuredContent["error"]["code"] == "unknown_tool"  # type: ignore[index]
    assert wildcard.isError
    assert wildcard.structuredContent["error"]["code"] == "bad_request"  # type: ignore[index]
    # headers that name the victim change nothing either
    async with httpx.AsyncClient(timeout=10) as http:
        forged = {"X-Agentd-Agent": "lender", "X-Forwarded-User": "lender"}
        session_id = await _open_session(http, url, mallory, forged)
        answer = await _call(http, url, mallory, session_id, "loan.approve", forged)
        # the victim's own session, with the attacker's token: as if it did not exist
        victims = await _open_session(http, url, lender)
        hijack = await _call(http, url, mallory, victims, "credit.score")
    assert answer["result"]["isError"] and "mallory" in answer["result"]["content"][0]["text"]
    assert hijack.get("status") == 404
    # the records come in the recorder's batches: wait for them (a loaded machine)
    denied = at_least(daemon, "tool.denied", lambda r: r.get("agent") == "mallory", 4)
    assert len(denied) >= 4
    assert not records_where(
        daemon,
        "tool.requested",
        lambda r: r.get("agent") == "lender" and r["attributes"].get("tool") == "loan.approve",
        timeout_s=0.5,
    )
    # control: the same endpoint with every token mapped to lender lets the call through
    async with (
        endpoint_without_identity(daemon, "lender") as bypass,
        mcp_session(bypass, mallory) as session,
    ):
        through = await session.call_tool("loan.approve", LOAN)
    assert not through.isError, through.content
    assert through.structuredContent["status"] == "approved"  # type: ignore[index]


async def test_a_huge_or_deep_body_is_refused_before_mcp_parses_it(
    served: tuple[DaemonProcess, str],
) -> None:
    daemon, url = served
    _, mallory = await register_partner(daemon, "mallory", tools=["credit.score"])
    huge = _call_body("credit.score", {"applicant_id": "A" * (2 * LIMIT)})
    nested = b"[" * 20_000 + b"]" * 20_000  # 40 KB: under the size bound, far over the depth
    deep = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": ' + nested + b"}"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(64):
            yield b" " * 4096

    auth = {**HEADERS, "Authorization": f"Bearer {mallory}"}
    async with httpx.AsyncClient(timeout=30) as http:
        too_big = await http.post(url, content=huge, headers=auth)
        streamed = await http.post(url, content=chunks(), headers=auth)
        too_deep = await http.post(url, content=deep, headers=auth)
        anonymous = await http.post(url, content=huge, headers=HEADERS)
    assert too_big.status_code == 413 and "max_request_bytes" in too_big.text
    assert streamed.status_code == 413
    assert too_deep.status_code == 400 and "deeper" in too_deep.text
    assert anonymous.status_code == 401  # who is asking comes first
    refused = at_least(
        daemon,
        "mcp.request_refused",
        lambda r: r.get("agent") == "mallory" and r["decision"] == "request_too_large",
        2,
    )
    assert len(refused) >= 2 and all(r["attributes"]["status"] == 413 for r in refused)
    # the endpoint still serves
    async with mcp_session(url, mallory) as session:
        ok = await session.call_tool("credit.score", {"applicant_id": APPLICANT})
    assert not ok.isError
    # control: the same body reaches MCP (and its tool) when the bound is lifted
    async with (
        endpoint_without_identity(daemon, "mallory", max_request_bytes=16 << 20) as bare,
        httpx.AsyncClient(timeout=30) as http,
    ):
        session_id = await _open_session(http, bare, mallory)
        passed = await http.post(bare, content=huge, headers={**auth, "mcp-session-id": session_id})
    assert passed.status_code == 200, passed.text
    assert passed.json()["result"]["isError"]  # decided by the gateway (the schema's bound)


def _call_body(tool: str, args: dict[str, object], request_id: int = 2) -> bytes:
    params = {"name": tool, "arguments": args}
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    ).encode()


async def _open_session(
    http: httpx.AsyncClient, url: str, token: str, extra: dict[str, str] | None = None
) -> str:
    """initialize + initialized by hand; the session id the server gave."""
    headers = {**HEADERS, "Authorization": f"Bearer {token}", **(extra or {})}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"},
        },
    }
    opened = await http.post(url, json=init, headers=headers)
    assert opened.status_code == 200, opened.text
    session_id = opened.headers["mcp-session-id"]
    headers["mcp-session-id"] = session_id
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert (await http.post(url, json=done, headers=headers)).status_code == 202
    return session_id


async def _call(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    session_id: str,
    tool: str,
    extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    headers = {
        **HEADERS,
        "Authorization": f"Bearer {token}",
        "mcp-session-id": session_id,
        **(extra or {}),
    }
    answer = await http.post(url, content=_call_body(tool, LOAN), headers=headers)
    if answer.status_code != 200:
        return {"status": answer.status_code, "text": answer.text}
    body: dict[str, Any] = answer.json()
    return body
