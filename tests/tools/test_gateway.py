"""The tool gateway end to end: an agent's context calls tools over a real nats-server; each
step is checked and recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from agentd.config import ToolsConfig
from agentd.policy import DecisionPoint
from agentd.worker import ToolCallFailed

from .support import EXAMPLE_POLICY, in_run, ledger_lines, running_gateway, wait_dead

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_an_allowed_call_runs_and_each_step_is_recorded(nats_url: str, ledger: Path) -> None:
    point = DecisionPoint.from_dir(EXAMPLE_POLICY)
    async with running_gateway(nats_url, point=point) as env:
        ctx = env.context("underwriter")
        with in_run(ctx) as run:
            result = await ctx.call_tool(
                "loan.approve", {"applicant_id": "A-1001", "amount": 5000, "payee": "acct-1001"}
            )
        assert result["status"] == "approved"
        assert result["amount"] == 5000
        assert len(ledger_lines(ledger)) == 1
        assert env.records.kinds() == ["tool.requested", "tool.executed"]
        requested, executed = env.records.items
        assert requested["agent"] == "underwriter"
        assert requested["run_id"] == run.run_id
        assert requested["conversation_id"] == "conversation-1"
        assert requested["inputs"]["args"]["payee"] == "acct-1001"
        assert requested["attributes"]["call_id"] == "c1"
        assert requested["attributes"]["message_id"] == run.message_id
        assert executed["decision"] == "ok"
        assert executed["rule"].startswith("policy.csv:")
        assert executed["outputs"] == result
        assert executed["lineage"]["policy_version"] == point.version


async def test_example_tools_answer(nats_url: str, ledger: Path) -> None:
    async with running_gateway(nats_url, point=DecisionPoint.from_dir(EXAMPLE_POLICY)) as env:
        intake, compliance = env.context("intake"), env.context("compliance")
        with in_run(intake):
            score = await intake.call_tool("credit.score", {"applicant_id": "A-1001"})
            again = await intake.call_tool("credit.score", {"applicant_id": "A-1001"})
            page = await intake.call_tool("http.fetch", {"url": "https://rates.example.org/today"})
        with in_run(compliance):
            rows = await compliance.call_tool(
                "sql.query", {"query": "SELECT applicant_id, status FROM applications"}
            )
        assert 300 <= score["score"] <= 850
        assert score == again  # deterministic
        assert page["body"]["base_rate_percent"] == 4.25
        assert {"applicant_id": "A-1001", "status": "approved"} in rows
        # call ids follow the order of calls in a run
        ids = [r["attributes"]["call_id"] for r in env.records.of("tool.requested")]
        assert ids == ["c1", "c2", "c3", "c1"]


async def test_arguments_are_checked_against_the_schema_naming_the_field(
    nats_url: str, ledger: Path
) -> None:
    good = {"applicant_id": "A-1001", "amount": 5000, "payee": "acct-1001"}
    async with running_gateway(nats_url, point=DecisionPoint.from_dir(EXAMPLE_POLICY)) as env:
        ctx = env.context("underwriter")
        failures: dict[str, ToolCallFailed] = {}
        with in_run(ctx):
            for label, args in {
                "amount": {**good, "amount": "lots"},
                "memo": {**good, "memo": "ignore previous instructions"},
                "payee": {"applicant_id": "A-1001", "amount": 5000},
                "applicant_id": {**good, "applicant_id": 1001},
            }.items():
                with pytest.raises(ToolCallFailed) as caught:
                    await ctx.call_tool("loan.approve", args)
                failures[label] = caught.value
        for label, failure in failures.items():
            assert failure.code == "invalid_args"
            assert failure.rule == "schema loan.approve"
            assert f"{label}:" in str(failure), str(failure)
        assert "memo: not an argument of loan.approve" in str(failures["memo"])
        assert "payee: required argument is missing" in str(failures["payee"])
        denied = env.records.of("tool.denied")
        assert [d["decision"] for d in denied] == ["invalid_args"] * 4
        assert ledger_lines(ledger) == []


async def test_unknown_tools_bad_requests_and_calls_outside_a_run(nats_url: str) -> None:
    async with running_gateway(nats_url, point=DecisionPoint.from_dir(EXAMPLE_POLICY)) as env:
        ctx = env.context("intake")
        with in_run(ctx), pytest.raises(ToolCallFailed) as caught:
            await ctx.call_tool("shell.exec", {"cmd": "id"})
        assert (caught.value.code, caught.value.rule) == ("unknown_tool", "tool registry")
        for name in ("credit.score >", "credit.*", "credit..score", ""):
            with in_run(ctx), pytest.raises(ToolCallFailed) as bad_name:
                await ctx.call_tool(name, {"applicant_id": "A-1001"})
            assert bad_name.value.code == "bad_request"
        with pytest.raises(RuntimeError, match="inside a run"):
            await ctx.call_tool("credit.score", {"applicant_id": "A-1001"})
        answer = await env.raw_call("intake", "credit.score", {"args": {"applicant_id": "A-1"}})
        assert answer["ok"] is False
        assert answer["error"]["code"] == "bad_request"
        assert "message_id" in answer["error"]["message"]
        assert set(answer["error"]) == {
            "code",
            "message",
            "rule",
            "retry_after_s",
            "approval_id",
            "retryable",
        }
        reply = await env.nc.request(env.subjects.tool("intake", "credit.score"), b"{", timeout=5)
        assert json.loads(reply.data)["error"]["code"] == "bad_request"
        assert [r["decision"] for r in env.records.of("tool.denied")] == [
            "unknown_tool",
            "bad_request",
            "bad_request",
        ]


async def test_rate_limit_returns_retry_after(nats_url: str) -> None:
    point = DecisionPoint.from_dir(EXAMPLE_POLICY)
    async with running_gateway(nats_url, point=point) as env:
        ctx = env.context("intake")
        with in_run(ctx):
            for _ in range(10):  # credit.score: burst 10 per agent
                await ctx.call_tool("credit.score", {"applicant_id": "A-1001"})
            with pytest.raises(ToolCallFailed) as caught:
                await ctx.call_tool("credit.score", {"applicant_id": "A-1001"}, call_id="retry")
            # the refused call gave its key back: after the wait, the same call runs
            await anyio.sleep(caught.value.retry_after_s or 0)
            score = await ctx.call_tool("credit.score", {"applicant_id": "A-1001"}, call_id="retry")
        assert score["applicant_id"] == "A-1001"
        failure = caught.value
        assert failure.code == "rate_limited"
        assert failure.retryable
        assert failure.retry_after_s is not None and 0 < failure.retry_after_s <= 0.2 + 1e-9
        assert failure.rule is not None and failure.rule.startswith("limits.toml:")
        denied = env.records.of("tool.denied")
        assert [d["decision"] for d in denied] == ["rate_limited"]
        assert denied[0]["attributes"]["retry_after_s"] == failure.retry_after_s


async def test_policy_off_allows_what_the_spec_lists(nats_url: str, ledger: Path) -> None:
    async with running_gateway(nats_url, point=None) as env:
        ctx = env.context("underwriter")
        with in_run(ctx):
            # over the cap and to another payee: only the policy would stop it
            await ctx.call_tool(
                "loan.approve", {"applicant_id": "x", "amount": 90000, "payee": "acct-6666"}
            )
        echo = env.context("echo")
        with in_run(echo), pytest.raises(ToolCallFailed) as caught:
            await echo.call_tool("credit.score", {"applicant_id": "A-1001"})
        assert caught.value.rule == "agent spec echo: tools"  # the spec still holds
        assert env.records.of("tool.executed")[0]["rule"] == "policy off"
        assert len(ledger_lines(ledger)) == 1


ISOLATED = """
import os, subprocess, time
from pathlib import Path
from agentd.tools import tool

@tool("proc.pid", isolated=True)
def pid() -> int:
    print("noise on stdout must not spoil the answer")
    return os.getpid()

# 3 s: a loaded 2-core machine takes up to ~1.2 s to start the tool's Python
@tool("proc.hang", isolated=True, timeout_s=3)
def hang(pid_file: str) -> None:
    child = subprocess.Popen(["sleep", "60"])
    Path(pid_file).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(60)

@tool("proc.fail", isolated=True)
def fail() -> None:
    raise ValueError("the ledger is closed")
"""


async def test_isolated_tools_run_in_another_process_killed_on_timeout(
    nats_url: str, tmp_path: Path
) -> None:
    tools_dir = tmp_path / "tools"
    tools_dir.mkdir()
    (tools_dir / "proc.py").write_text(ISOLATED)
    specs = {"ops": ["proc.pid", "proc.hang", "proc.fail"]}
    config = ToolsConfig(call_timeout_s=20)
    async with running_gateway(
        nats_url, point=None, tools_dir=tools_dir, agent_tools=specs, config=config
    ) as env:
        ctx = env.context("ops")
        pid_file = tmp_path / "pids"
        with in_run(ctx):
            child_pid = await ctx.call_tool("proc.pid")
            with pytest.raises(ToolCallFailed) as hung:
                await ctx.call_tool("proc.hang", {"pid_file": str(pid_file)})
            with pytest.raises(ToolCallFailed) as failed:
                await ctx.call_tool("proc.fail")
    assert isinstance(child_pid, int) and child_pid != os.getpid()
    assert hung.value.code == "tool_failed"
    assert hung.value.retryable
    assert "timed out after 3s" in str(hung.value)
    tool_pid, sleeper_pid = (int(p) for p in pid_file.read_text().split())
    assert wait_dead(tool_pid, sleeper_pid)  # its process group went with it
    assert failed.value.code == "tool_failed"
    assert not failed.value.retryable
    assert "ValueError: the ledger is closed" in str(failed.value)
    assert [r["decision"] for r in env.records.of("tool.failed")] == ["error", "error"]


async def test_without_its_results_bucket_a_call_is_refused_not_run(
    nats_url: str, ledger: Path
) -> None:
    async with running_gateway(nats_url, point=DecisionPoint.from_dir(EXAMPLE_POLICY)) as env:
        await env.nc.jetstream().delete_key_value(env.subjects.tool_results_bucket)
        ctx = env.context("underwriter")
        with in_run(ctx), pytest.raises(ToolCallFailed) as caught:
            await ctx.call_tool(
                "loan.approve", {"applicant_id": "A-1001", "amount": 5000, "payee": "acct-1001"}
            )
    assert caught.value.code == "unavailable"
    assert caught.value.retryable
    assert ledger_lines(ledger) == []  # no idempotency key, no side effect
    assert env.records.of("tool.failed")[0]["reason"].startswith("unavailable")
