"""MCP servers mounted by a real daemon: `[tools.mcp.<server>]` stdio (started, sandboxed and
restarted by the supervisor) and streamable HTTP (a header from the environment). A real worker
calls `<server>.<tool>` through the gateway, under policy, limits and records; the servers are
real processes written with the MCP SDK (tests/tools/mcp_server.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    REPO,
    DaemonProcess,
    decision_records,
    free_port,
    records_when,
    running_daemon,
    write_config,
)

pytestmark = pytest.mark.integration

SERVER = Path(__file__).with_name("mcp_server.py")
AGENTS = Path(__file__).parents[1] / "agents"
RULES = """
p, mcpuser, tool:t.echo, call, allow
p, mcpuser, tool:t.add, call, allow
p, mcpuser, tool:t.pid, call, allow
p, mcpuser, tool:t.sleep, call, allow
p, mcpuser, tool:t.fail, call, allow
p, mcpuser, tool:t.b.c, call, allow
p, mcpuser, tool:web.whoami, call, allow
p, mcpuser, tool:credit.score, call, allow
p, catalog, tool:t.echo, call, allow
p, catalog, tool:t.add, call, allow
p, catalog, tool:credit.score, call, allow
"""
LIMITS = """
[[limit]]
agent = "*"
tool = "t.add"
per_minute = 1
burst = 2
"""


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        import socket

        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, http_server: str) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("mcp")
    policies = directory / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as f:
        f.write(RULES)
    with (policies / "limits.toml").open("a") as f:
        f.write(LIMITS)
    agents = directory / "agents"
    agents.mkdir()
    (agents / "mcpuser").symlink_to(AGENTS / "mcpuser")
    (agents / "catalog").symlink_to(AGENTS / "catalog")
    mark = directory / "state" / "scratch" / "mcp" / "t" / "sleeping.pid"
    config = write_config(
        directory,
        agents_dir=agents,
        policy="enforce",
        extra=(
            f'[tools]\ndir = "{REPO / "tools"}"\n'
            "[autoscale]\nenabled = false\n"
            # the server under test, its tools t.*, with one dotted tool: t.b.c
            "[tools.mcp.t]\n"
            f'command = "python"\nargs = ["{SERVER}", "--bad"]\n'
            f'env = {{MCP_TEST_MARK = "{mark}"}}\n'
            "timeout_s = 20\n"
            # its tool `c` would be t.b.c too: a dot collision, refused
            '[tools.mcp."t.b"]\n'
            f'command = "python"\nargs = ["{SERVER}"]\nenv = {{MCP_TEST_EXTRA_TOOL = "c"}}\n'
            # `score` would be credit.score, a tools/ tool: refused
            "[tools.mcp.credit]\n"
            f'command = "python"\nargs = ["{SERVER}"]\nenv = {{MCP_TEST_EXTRA_TOOL = "score"}}\n'
            # a command that does not exist: refused, nothing else harmed
            "[tools.mcp.nope]\n"
            'command = "agentd-no-such-mcp-server"\n'
            "[tools.mcp.web]\n"
            f'url = "{http_server}"\nheaders_env = {{Authorization = "MCP_TEST_AUTH"}}\n'
        ),
    )
    (directory / "agentd.toml").write_text(
        config.read_text().replace(f'dir = "{REPO / "policies"}"', f'dir = "{policies}"')
    )
    env = {"MCP_TEST_AUTH": "Bearer test-token-1"}
    with running_daemon(config, env=env) as d:
        yield d
        assert d.stop() == 0


def call(daemon: DaemonProcess, tool: str, args: dict[str, Any], **more: Any) -> dict[str, Any]:
    payload = json.dumps({"tool": tool, "args": args, **more})
    out = daemon.agentctl("send", "mcpuser", payload, "--wait", timeout_s=90)
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_tools_are_listed_with_their_schemas_and_an_allowed_call_runs(
    daemon: DaemonProcess,
) -> None:
    assert call(daemon, "t.echo", {"text": "hello"})["result"] == "hello"
    assert call(daemon, "t.add", {"a": 2, "b": 3}, call="add-1")["result"] == {"sum": 5}
    error = call(daemon, "t.echo", {"text": 5, "loud": True})["error"]
    assert error["code"] == "invalid_args"
    assert "loud: not an argument of t.echo" in error["message"]
    executed = decision_records(daemon.dir / "state", "tool.executed")
    echo = [r for r in executed if r["attributes"]["tool"] == "t.echo"]
    assert echo and echo[0]["outputs"] == "hello" and echo[0]["rule"].startswith("policy.csv:")
    assert echo[0]["attributes"]["trust"] == "untrusted"  # an MCP server's, by default
    assert echo[0]["lineage"]["policy_version"] and echo[0]["span_id"]


def test_a_call_policy_does_not_allow_is_denied_and_recorded(daemon: DaemonProcess) -> None:
    error = call(daemon, "t.whoami", {})["error"]
    assert error["code"] == "policy_denied", error
    denied = decision_records(daemon.dir / "state", "tool.denied")
    assert any("t.whoami" in json.dumps(r) for r in denied)


def test_calls_over_the_rate_limit_are_refused(daemon: DaemonProcess) -> None:
    codes = [
        call(daemon, "t.add", {"a": 1, "b": i}, call=f"limit-{i}").get("error", {}).get("code")
        for i in range(4)
    ]
    assert "rate_limited" in codes, codes


def test_a_tool_error_is_a_failed_call(daemon: DaemonProcess) -> None:
    error = call(daemon, "t.fail", {})["error"]
    assert error["code"] == "tool_failed"
    assert "MCP server t" in error["message"] and "always fails" in error["message"]


def test_the_server_killed_mid_call_fails_the_call_and_is_restarted(
    daemon: DaemonProcess,
) -> None:
    mark = daemon.dir / "state" / "scratch" / "mcp" / "t" / "sleeping.pid"
    mark.unlink(missing_ok=True)
    first = call(daemon, "t.pid", {})["result"]["pid"]
    answers: list[dict[str, Any]] = []
    caller = threading.Thread(
        target=lambda: answers.append(call(daemon, "t.sleep", {"seconds": 30}))
    )
    caller.start()
    deadline = time.monotonic() + 30
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.exists(), daemon.log()
    assert int(mark.read_text()) == first
    os.kill(first, signal.SIGKILL)
    caller.join(timeout=60)
    error = answers[0]["error"]
    assert error["code"] == "tool_failed" and error["retryable"], error
    assert "MCP server t" in error["message"], error
    # restarted by the supervisor: a new process answers
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        answer = call(daemon, "t.pid", {})
        if "result" in answer and answer["result"]["pid"] != first:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"the server was not restarted:\n{daemon.log()}")
    assert call(daemon, "t.echo", {"text": "again"})["result"] == "again"


def test_an_http_server_gets_its_header_from_the_environment(daemon: DaemonProcess) -> None:
    assert call(daemon, "web.whoami", {})["result"] == {"authorization": "Bearer test-token-1"}
    assert "test-token-1" not in (daemon.dir / "agentd.toml").read_text()


def test_bad_servers_and_tools_are_clear_errors_and_the_rest_serves(
    daemon: DaemonProcess,
) -> None:
    log = daemon.log()
    assert "[tools.mcp.nope]: command 'agentd-no-such-mcp-server' not found" in log
    assert "MCP server t: tool 'malformed': malformed schema" in log
    assert "MCP server t: tool 'openmap': not strict" in log
    # whichever answered first, the server listed first in agentd.toml keeps the name
    assert "tool 't.b.c' of mcp:t.b collides with 't.b.c' of mcp:t" in log
    assert "tool 't.b.c' of mcp:t collides" not in log
    assert "tool 'credit.score' of mcp:credit collides with 'credit.score' of tools/" in log
    # the dotted tool of the first server serves; the tools/ tool is still the tools/ one
    assert call(daemon, "t.b.c", {})["result"] == {"called": "b.c"}
    assert "score" in json.dumps(call(daemon, "credit.score", {"applicant_id": "A-4711"})["result"])
    assert call(daemon, "t.malformed", {})["error"]["code"] == "unknown_tool"


def test_a_toolnode_graph_takes_the_gateways_tools_with_their_schemas(
    daemon: DaemonProcess,
) -> None:
    calls = [
        {"name": "t.echo", "args": {"text": "hi"}, "id": "call_echo_1"},
        {"name": "credit.score", "args": {"applicant_id": "A-4711"}, "id": "call_score_1"},
        {"name": "t.whoami", "args": {}, "id": "call_who_1"},  # policy says no
    ]
    out = daemon.agentctl("send", "catalog", json.dumps({"calls": calls}), "--wait", timeout_s=90)
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()}"
    answer = json.loads(out.stdout)
    catalog = {entry["name"]: entry for entry in answer["catalog"]}
    assert set(catalog) == {"t.echo", "t.add", "t.whoami", "credit.score"}
    echo = catalog["t.echo"]
    assert echo["description"] == "Echo the text back."
    assert echo["schema"] == {
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 200}},
        "required": ["text"],
        "additionalProperties": False,
    }
    assert "applicant_id" in catalog["credit.score"]["schema"]["properties"]
    assert all(e["metadata"] == {"agentd_gateway": True} and e["module"] for e in catalog.values())
    results = {r["id"]: r for r in answer["results"]}
    assert results["call_echo_1"]["content"] == "hi"
    assert results["call_echo_1"]["status"] == "success"
    assert "score" in results["call_score_1"]["content"]
    denied = results["call_who_1"]
    assert denied["status"] == "error" and "policy_denied" in denied["content"], denied

    # each call keyed by the model's own call id, recorded under it
    def call_ids(records: list[dict[str, Any]]) -> set[str]:
        return {r["attributes"].get("call_id") for r in records}

    state = daemon.dir / "state"
    executed = records_when(
        state, "tool.executed", lambda rs: {"call_echo_1", "call_score_1"} <= call_ids(rs)
    )
    keyed = {r["attributes"]["call_id"]: r["attributes"]["tool"] for r in executed}
    assert keyed.get("call_echo_1") == "t.echo" and keyed.get("call_score_1") == "credit.score", (
        keyed
    )
    refusals = records_when(state, "tool.denied", lambda rs: "call_who_1" in call_ids(rs))
    assert any(r["attributes"].get("call_id") == "call_who_1" for r in refusals)
