"""Human approval: a loan over 10,000 parks until an operator approves or denies it, or until the
approval times out. An approval binds to the exact arguments and the policy version."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentd.config import ToolsConfig
from agentd.errors import ControlError
from agentd.policy import DecisionPoint, args_digest
from agentd.worker import AgentContext, ToolCallFailed

from .support import EXAMPLE_POLICY, GatewayEnv, in_run, ledger_lines, running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BIG_LOAN = {"applicant_id": "A-1001", "amount": 20000, "payee": "acct-2002"}


class Call:
    """A tool call running in the background (it parks), with its outcome once it ends."""

    def __init__(self) -> None:
        self.result: Any = None
        self.error: ToolCallFailed | None = None
        self.done = anyio.Event()

    async def run(
        self, ctx: AgentContext, args: dict[str, Any], message_id: str | None = None
    ) -> None:
        try:
            with in_run(ctx, message_id):
                self.result = await ctx.call_tool("loan.approve", args)
        except ToolCallFailed as exc:
            self.error = exc
        finally:
            self.done.set()

    async def outcome(self) -> None:
        with anyio.fail_after(10):
            await self.done.wait()


async def _parked(env: GatewayEnv, count: int = 1) -> dict[str, Any]:
    """The approval the `count`-th parked call asked for, once it is parked."""
    record = await env.records.wait_for("tool.approval_requested", count)
    approval_id = record["attributes"]["approval_id"]
    [pending] = [p for p in env.gateway.pending() if p["id"] == approval_id]
    return pending


async def test_approve_runs_the_call_once(nats_url: str, ledger: Path) -> None:
    point = DecisionPoint.from_dir(EXAMPLE_POLICY)
    async with running_gateway(nats_url, point=point) as env, anyio.create_task_group() as tg:
        call = Call()
        tg.start_soon(call.run, env.context("underwriter"), BIG_LOAN)
        pending = await _parked(env)
        assert ledger_lines(ledger) == []  # parked: nothing ran yet
        assert pending["agent"] == "underwriter"
        assert pending["tool"] == "loan.approve"
        # the arguments as validated (amount: float), which policy decided on and which will run
        assert pending["args"] == {**BIG_LOAN, "amount": 20000.0}
        assert pending["args_digest"] == args_digest({**BIG_LOAN, "amount": 20000.0})
        assert pending["policy_version"] == point.version
        assert pending["rule"].startswith("constraints.toml:53")
        assert pending["run_id"] and pending["message_id"]
        assert pending["expires_at"] > pending["requested_at"]

        answer = env.gateway.approve(pending["id"], "operator:alice")
        assert answer["status"] == "approved"
        await call.outcome()
        assert call.error is None
        assert call.result["amount"] == 20000
        assert len(ledger_lines(ledger)) == 1
        assert env.gateway.pending() == []
        with pytest.raises(ControlError) as again:  # single use
            env.gateway.approve(pending["id"], "operator:alice")
        assert again.value.code == "not_found"
        assert env.records.kinds() == [
            "tool.requested",
            "tool.approval_requested",
            "tool.approved",
            "tool.executed",
        ]
        approved = env.records.of("tool.approved")[0]
        assert approved["operator"] == "operator:alice"
        assert approved["attributes"]["approval_id"] == pending["id"]


async def test_deny_with_a_reason(nats_url: str, ledger: Path) -> None:
    async with (
        running_gateway(nats_url, point=DecisionPoint.from_dir(EXAMPLE_POLICY)) as env,
        anyio.create_task_group() as tg,
    ):
        call = Call()
        tg.start_soon(call.run, env.context("underwriter"), BIG_LOAN)
        pending = await _parked(env)
        answer = env.gateway.deny(pending["id"], "operator:bob", "income not verified")
        assert (answer["status"], answer["reason"]) == ("denied", "income not verified")
        await call.outcome()
    assert call.error is not None
    assert call.error.code == "approval_denied"
    assert call.error.approval_id == pending["id"]
    assert "income not verified" in str(call.error)
    rejected = env.records.of("tool.rejected")[0]
    assert (rejected["operator"], rejected["reason"]) == ("operator:bob", "income not verified")
    assert ledger_lines(ledger) == []
    with pytest.raises(ControlError) as unknown:
        env.gateway.deny("ap-000000000000", "operator:bob", "no such call")
    assert unknown.value.code == "not_found"


async def test_no_answer_in_time_denies(nats_url: str, ledger: Path) -> None:
    config = ToolsConfig(approval_timeout_s=0.3)
    point = DecisionPoint.from_dir(EXAMPLE_POLICY)
    async with running_gateway(nats_url, point=point, config=config) as env:
        call = Call()
        await call.run(env.context("underwriter"), BIG_LOAN)
        assert call.error is not None
        assert (call.error.code, call.error.rule) == ("approval_timeout", "approval timeout")
        assert env.gateway.pending() == []
        assert env.records.of("tool.rejected")[0]["decision"] == "timeout"
    assert ledger_lines(ledger) == []


async def test_changed_arguments_need_a_new_approval(nats_url: str, ledger: Path) -> None:
    async with (
        running_gateway(nats_url, point=DecisionPoint.from_dir(EXAMPLE_POLICY)) as env,
        anyio.create_task_group() as tg,
    ):
        ctx = env.context("underwriter")
        first = Call()
        tg.start_soon(first.run, ctx, BIG_LOAN, "message-1")
        approved = await _parked(env)
        env.gateway.approve(approved["id"], "operator:alice")
        await first.outcome()
        assert first.error is None

        # the same run again (a rerun of message-1: same key c1) with another amount: refused
        rerun = Call()
        await rerun.run(ctx, {**BIG_LOAN, "amount": 25000}, "message-1")
        assert rerun.error is not None
        assert (rerun.error.code, rerun.error.rule) == ("idempotency_conflict", "idempotency")

        # a new call with changed arguments parks anew: the approval given was for 20,000
        changed = Call()
        tg.start_soon(changed.run, ctx, {**BIG_LOAN, "amount": 25000})
        pending = await _parked(env, 2)
        assert pending["id"] != approved["id"]
        assert pending["args"]["amount"] == 25000
        assert len(ledger_lines(ledger)) == 1  # the changed call did not run
        env.gateway.deny(pending["id"], "operator:alice", "amount changed")
        await changed.outcome()
    assert changed.error is not None and changed.error.code == "approval_denied"
    assert len(ledger_lines(ledger)) == 1


async def test_a_policy_reload_invalidates_a_pending_approval(
    nats_url: str, ledger: Path, tmp_path: Path
) -> None:
    policy_dir = tmp_path / "policies"
    shutil.copytree(EXAMPLE_POLICY, policy_dir)
    point = DecisionPoint.from_dir(policy_dir)
    async with running_gateway(nats_url, point=point) as env, anyio.create_task_group() as tg:
        call = Call()
        tg.start_soon(call.run, env.context("underwriter"), BIG_LOAN)
        pending = await _parked(env)
        constraints = policy_dir / "constraints.toml"
        constraints.write_text(constraints.read_text().replace("above = 10000", "above = 15000"))
        point.reload()
        assert point.version != pending["policy_version"]
        with pytest.raises(ControlError) as invalid:
            env.gateway.approve(pending["id"], "operator:alice")
        assert invalid.value.code == "approval_invalid"
        await call.outcome()
    assert call.error is not None
    assert call.error.code == "approval_denied"
    assert "the policy changed" in str(call.error)
    assert env.records.of("tool.rejected")[0]["rule"] == "approval binding"
    assert ledger_lines(ledger) == []


async def test_trace_context_is_shown_and_shutdown_refuses_parked_calls(
    nats_url: str, ledger: Path
) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    body = {"args": BIG_LOAN, "message_id": "m-7", "call_id": "c1", "run_id": "r-7"}
    answers: list[dict[str, Any]] = []
    async with running_gateway(nats_url, point=DecisionPoint.from_dir(EXAMPLE_POLICY)) as env:

        async def call() -> None:
            answers.append(await env.raw_call("underwriter", "loan.approve", body, headers))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            pending = await _parked(env)
            assert (pending["trace_id"], pending["run_id"]) == (trace, "r-7")
            await env.gateway.shutdown()
    [answer] = answers
    assert answer["error"]["code"] == "unavailable"
    assert answer["error"]["retryable"] is True
    assert ledger_lines(ledger) == []
