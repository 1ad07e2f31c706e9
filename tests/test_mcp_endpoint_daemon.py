"""agentd as an MCP server, driven by an outside MCP client (the official SDK's) against a real
daemon: a bearer token per identity, the tools that identity may use with their schemas, and
every call decided, recorded and refused exactly as the agent's own calls are."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from tests.harness import DaemonProcess, admin_credentials, decision_records
from tests.mcp_endpoint_support import (
    agent_call,
    at_least,
    mcp_daemon,
    mcp_session,
    register_partner,
    replica_token,
)
from tests.security.support import records_where

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

APPLICANT = "A-4711"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "curl", "version": "0"},
    },
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str]]:
    with mcp_daemon(tmp_path_factory.mktemp("mcp")) as daemon_and_url:
        yield daemon_and_url


def steps(daemon: DaemonProcess, agent: str, message_prefix: str) -> list[dict[str, Any]]:
    """The tool.* records of `agent`'s calls whose message id starts with `message_prefix`, in
    log order, once the last call's denial is in the log."""

    def ours(record: dict[str, Any]) -> bool:
        attrs = record.get("attributes") or {}
        return (
            record["kind"] in {"tool.requested", "tool.executed", "tool.denied"}
            and record.get("agent") == agent
            and str(attrs.get("message_id", "")).startswith(message_prefix)
        )

    records_where(daemon, "tool.denied", ours)  # waits for the recorder's batch
    return [r for r in decision_records(daemon.state_dir) if ours(r)]


def shape(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What must be the same for the same call through MCP and over NATS."""
    return [
        (r["kind"], r["agent"], (r.get("attributes") or {}).get("tool"), r.get("decision"),
         r.get("rule"), (r.get("lineage") or {}).get("policy_version"), r["source"])
        for r in records
    ]  # fmt: skip


async def test_no_token_or_a_wrong_one_is_401_before_any_mcp(
    served: tuple[DaemonProcess, str],
) -> None:
    daemon, url = served
    async with httpx.AsyncClient(timeout=10) as http:
        bare = await http.post(url, json=INITIALIZE, headers=HEADERS)
        forged = await http.post(
            url, json=INITIALIZE, headers={**HEADERS, "Authorization": "Bearer agentd-forged"}
        )
        basic = await http.post(
            url, json=INITIALIZE, headers={**HEADERS, "Authorization": "Basic dXNlcjpwdw=="}
        )
    for answer in (bare, forged, basic):
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "mcp-session-id" not in answer.headers  # no session was opened
    assert "no bearer token" in bare.text and "unknown or revoked" in forged.text
    refused = at_least(
        daemon, "mcp.request_refused", lambda r: r["decision"] == "unauthenticated", 3
    )
    assert len(refused) >= 3 and all(r["rule"] == "bearer token" for r in refused)
    assert all(r.get("agent") is None for r in refused)
    # the SDK's client cannot even initialize without one
    with pytest.raises(BaseExceptionGroup) as failed:  # the SDK's task groups wrap httpx's
        async with mcp_session(url, None):
            pass
    statuses = [e.response.status_code for e in leaves(failed.value)
                if isinstance(e, httpx.HTTPStatusError)]  # fmt: skip
    assert statuses == [401], failed.value


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


async def test_a_registered_agent_lists_its_tools_with_schemas(
    served: tuple[DaemonProcess, str],
) -> None:
    daemon, url = served
    _, token = await register_partner(daemon, "partner")
    async with mcp_session(url, token) as session:
        listed = await session.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {"credit.score", "loan.approve"}  # its registration spec's tools
    schema = tools["credit.score"].inputSchema
    assert schema["type"] == "object" and "applicant_id" in schema["properties"]
    assert schema["required"] == ["applicant_id"]
    assert {"amount", "payee"} <= set(tools["loan.approve"].inputSchema["properties"])
    assert tools["credit.score"].description


async def test_an_allowed_call_and_a_denied_one_are_the_agents_decisions(
    served: tuple[DaemonProcess, str],
) -> None:
    daemon, url = served
    creds, token = await register_partner(daemon, "lender", tools=["loan.approve", "credit.score"])
    async with mcp_session(url, token) as session:
        ok = await session.call_tool("credit.score", {"applicant_id": APPLICANT})
        denied = await session.call_tool(
            "loan.approve", {"applicant_id": APPLICANT, "amount": 900000.0, "payee": "acct-1001"}
        )
        bad = await session.call_tool("credit.score", {"applicant_id": 7})
    assert not ok.isError and ok.structuredContent and "score" in ok.structuredContent
    assert json.loads(ok.content[0].text) == ok.structuredContent  # type: ignore[union-attr]
    # lender may call loan.approve (policy.csv) but not over the cap (constraints.toml): a
    # tool result with isError, the code and the rule, not a transport error
    assert denied.isError
    error = denied.structuredContent["error"]  # type: ignore[index]
    assert error["code"] == "policy_denied" and error["rule"].startswith("constraints.toml:")
    assert "policy_denied" in denied.content[0].text  # type: ignore[union-attr]
    assert error["rule"] in denied.content[0].text  # type: ignore[union-attr]
    assert bad.isError and bad.structuredContent["error"]["code"] == "invalid_args"  # type: ignore[index]
    records = records_where(
        daemon,
        "tool.denied",
        lambda r: r.get("agent") == "lender" and r.get("rule", "").startswith("constraints"),
    )
    assert records and records[0]["lineage"]["policy_version"]
    assert records[0]["attributes"]["tool"] == "loan.approve"
    assert records[0]["conversation_id"].startswith("mcp-")  # the MCP session
    # the very same call made over NATS as lender (as its agent code would) leaves the same
    # records: kind, agent, tool, decision, rule, policy version, source
    nats_ok = await agent_call(daemon, creds, "lender", "credit.score", {"applicant_id": APPLICANT})
    nats_denied = await agent_call(
        daemon,
        creds,
        "lender",
        "loan.approve",
        {"applicant_id": APPLICANT, "amount": 900000.0, "payee": "acct-1001"},
    )
    assert nats_ok["ok"] and not nats_denied["ok"]
    assert nats_denied["error"]["rule"] == error["rule"]
    via_mcp, via_nats = steps(daemon, "lender", "mcp:"), steps(daemon, "lender", "nats-")
    assert shape(via_mcp)[:4] == shape(via_nats)
    assert [r["kind"] for r in via_nats] == [
        "tool.requested",
        "tool.executed",
        "tool.requested",
        "tool.denied",
    ]


async def test_a_call_over_the_approval_threshold_parks_until_an_operator_approves(
    served: tuple[DaemonProcess, str],
) -> None:
    daemon, url = served
    _, token = await register_partner(daemon, "lender", tools=["loan.approve", "credit.score"])
    args = {"applicant_id": APPLICANT, "amount": 20000.0, "payee": "acct-2002"}
    box: dict[str, Any] = {}

    async def call() -> None:
        async with mcp_session(url, token) as session:
            box["result"] = await session.call_tool("loan.approve", args)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        waiting = await anyio.to_thread.run_sync(parked, daemon, "lender")
        assert waiting["tool"] == "loan.approve" and waiting["args"]["amount"] == 20000.0
        approved = await anyio.to_thread.run_sync(daemon.agentctl, "approve", waiting["id"])
        assert approved.returncode == 0, approved.stderr
    result = box["result"]
    assert not result.isError, result.content
    assert result.structuredContent["status"] == "approved"
    assert records_where(
        daemon,
        "tool.approved",
        lambda r: r.get("attributes", {}).get("approval_id") == waiting["id"],
    )


def parked(daemon: DaemonProcess, agent: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = daemon.agentctl("--json", "approvals")
        assert out.returncode == 0, out.stderr
        for entry in json.loads(out.stdout):
            if entry["agent"] == agent:
                found: dict[str, Any] = entry
                return found
        time.sleep(0.1)
    raise AssertionError(f"no call of {agent} showed up in agentctl approvals")


async def test_a_replica_token_is_that_agent_at_the_mcp_door(
    served: tuple[DaemonProcess, str],
) -> None:
    daemon, url = served
    token = replica_token(daemon)
    async with mcp_session(url, token) as session:
        listed = {t.name for t in (await session.list_tools()).tools}
        ok = await session.call_tool("credit.score", {"applicant_id": APPLICANT})
        missing = await session.call_tool("no.such", {})
    # scout's agent.toml tools that exist in tools/ (no.such is listed there, not in tools/)
    assert listed == {"credit.score", "loan.approve", "sql.query"}
    assert not ok.isError
    assert missing.isError and missing.structuredContent["error"]["code"] == "unknown_tool"  # type: ignore[index]
    executed = records_where(
        daemon,
        "tool.executed",
        lambda r: (
            r.get("agent") == "scout"
            and str(r["attributes"].get("message_id", "")).startswith("mcp:")
        ),
    )
    assert executed and executed[0]["decision"] == "ok"


async def test_the_idempotency_key_makes_a_retry_a_replay(
    served: tuple[DaemonProcess, str],
) -> None:
    _, url = served
    token = replica_token(served[0])
    args = {"applicant_id": APPLICANT}
    key = {"idempotency_key": "retry-4711"}
    async with mcp_session(url, token) as first:
        once = await first.call_tool("credit.score", args, meta=key)
    async with mcp_session(url, token) as second:  # a reconnect: a new session
        again = await second.call_tool("credit.score", args, meta=key)
        fresh = await second.call_tool("credit.score", args)
        conflict = await second.call_tool("credit.score", {"applicant_id": "A-1234"}, meta=key)
        bad_key = await second.call_tool("credit.score", args, meta={"idempotency_key": "x y"})
    assert not once.isError and once.meta == {"agentd/replayed": False}
    assert not again.isError and again.meta == {"agentd/replayed": True}
    assert again.structuredContent == once.structuredContent
    assert fresh.meta == {"agentd/replayed": False}  # no key: a call of its own
    assert conflict.isError
    assert conflict.structuredContent["error"]["code"] == "idempotency_conflict"  # type: ignore[index]
    assert bad_key.isError and "idempotency_key" in bad_key.content[0].text  # type: ignore[union-attr]


async def test_a_revoked_agents_token_is_refused_at_once(
    served: tuple[DaemonProcess, str],
) -> None:
    daemon, url = served
    _, token = await register_partner(daemon, "gone", tools=["credit.score"])
    from agentd.cli._client import ControlClient

    async with mcp_session(url, token) as session:
        assert not (await session.call_tool("credit.score", {"applicant_id": APPLICANT})).isError
        async with ControlClient(daemon.url, credentials=admin_credentials(daemon.url)) as ctl:
            await ctl.call("agents.revoke", {"agent": "gone"})
        # the open session's next request carries a token that is no longer issued
        async with httpx.AsyncClient(timeout=10) as http:
            after = await http.post(
                url, json=INITIALIZE, headers={**HEADERS, "Authorization": f"Bearer {token}"}
            )
    assert after.status_code == 401
    assert records_where(
        daemon,
        "mcp.request_refused",
        lambda r: r["decision"] == "unauthenticated" and "revoked" in r["reason"],
    )


async def test_status_and_config_check_name_the_endpoint(
    served: tuple[DaemonProcess, str],
) -> None:
    daemon, url = served
    from agentd.cli._client import ControlClient

    async with ControlClient(daemon.url, credentials=admin_credentials(daemon.url)) as ctl:
        status = await ctl.call("status")
    assert status["mcp_url"] == url
    assert status["services"]["mcp"] == f"listening on {url}"


async def test_the_daemon_stops_cleanly_with_sessions_open_and_a_call_parked(
    served: tuple[DaemonProcess, str],
) -> None:
    """Last in this module: it stops the daemon (the fixture's own stop then finds it gone)."""
    daemon, url = served
    _, token = await register_partner(daemon, "lender", tools=["loan.approve", "credit.score"])
    args = {"applicant_id": APPLICANT, "amount": 30000.0, "payee": "acct-3003"}
    box: dict[str, Any] = {}

    async def call() -> None:
        try:
            async with mcp_session(url, token) as session:
                box["result"] = await session.call_tool("loan.approve", args)
        except Exception as exc:  # the server went away under it: any transport error is fine
            box["error"] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await anyio.to_thread.run_sync(parked, daemon, "lender")
        started = time.monotonic()
        code = await anyio.to_thread.run_sync(daemon.stop)
        took = time.monotonic() - started
    assert code == 0, daemon.log()
    assert took < 15, took  # drain_grace_s is 5 s: the endpoint does not hold the daemon up
    result = box.get("result")
    assert "error" in box or (result is not None and result.isError), box
