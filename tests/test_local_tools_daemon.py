"""An unmodified prebuilt ReAct agent (create_react_agent, plain `@tool`s) under the real daemon:
every tool call it makes is decided, recorded and traced by the gateway, refusals reach the model
as ToolMessages, approvals go through `agentctl`, and a rerun does not repeat a side effect."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    REPO,
    TEST_AGENTS,
    DaemonProcess,
    decision_records,
    running_daemon,
    write_config,
)
from tests.telemetry.otlp_receiver import OtlpReceiver, otlp_receiver

pytestmark = pytest.mark.integration

AGENT = "react_tools"
RULES = f"""
p, {AGENT}, tool:find_order, call, allow
p, {AGENT}, tool:grant_refund, call, allow
"""
CONSTRAINTS = """
[[constraint]]
tool = "grant_refund"
arg = "amount"
required = true
max = 100

[[approval]]
tool = "grant_refund"
arg = "amount"
above = 50
"""


@dataclass
class Helpdesk:
    daemon: DaemonProcess
    receiver: OtlpReceiver

    @property
    def state(self) -> Path:
        return self.daemon.dir / "state"

    @property
    def scratch(self) -> Path:  # the only folder the sandboxed replica may write
        return self.state / "scratch" / AGENT

    def ask(self, calls: list[list[Any]], **script: Any) -> dict[str, Any]:
        content = json.dumps({"calls": calls, **script})
        payload = {"messages": [{"role": "user", "content": content}]}
        out = self.daemon.agentctl(
            "--json",
            "send",
            AGENT,
            json.dumps(payload),
            "--wait",
            "--wait-timeout",
            "90",
            timeout_s=100,
        )
        assert out.returncode == 0, f"{out.stderr}\n{self.daemon.log()}"
        result: dict[str, Any] = json.loads(out.stdout)
        return result


@pytest.fixture(scope="module")
def helpdesk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helpdesk]:
    root = tmp_path_factory.mktemp("local-tools")
    agents = root / "agents"
    agents.mkdir()
    (agents / AGENT).symlink_to(TEST_AGENTS / "react_tools")
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    with (policies / "policy.csv").open("a") as f:
        f.write(RULES)
    with (policies / "constraints.toml").open("a") as f:
        f.write(CONSTRAINTS)
    with otlp_receiver() as receiver:
        config = write_config(
            root,
            agents_dir=agents,
            policy="enforce",
            extra=(
                "[inbox]\nack_wait_s = 2.0\n"
                f'[tools]\napproval_timeout_s = 20.0\ndir = "{REPO / "tools"}"\n'
                "[autoscale]\nenabled = false\n"
                f'[trace.otlp]\nenabled = true\nendpoint = "{receiver.url}"\n'
                "export_interval_s = 0.2\n"
            ),
        )
        text = config.read_text().replace(f'dir = "{REPO / "policies"}"', f'dir = "{policies}"')
        config.write_text(text)
        with running_daemon(config) as daemon:
            yield Helpdesk(daemon, receiver)
            assert daemon.stop() == 0, daemon.log()


def answer(result: dict[str, Any]) -> str:
    """The model's final answer: `call_N=<status>:<tool message content>` for each call (a
    messages graph replies with its last AI message's content)."""
    assert result["ok"], result
    text: str = result["output"]
    return text


def records_of(helpdesk: Helpdesk, kind: str, message_id: str) -> list[dict[str, Any]]:
    time.sleep(0.3)  # records reach the log asynchronously
    found = decision_records(helpdesk.state, kind)
    return [r for r in found if r.get("attributes", {}).get("message_id") == message_id]


def of_message(helpdesk: Helpdesk, kind: str, message_id: str) -> dict[str, dict[str, Any]]:
    return {r["attributes"]["call_id"]: r for r in records_of(helpdesk, kind, message_id)}


def counted(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_each_call_of_the_prebuilt_agent_is_decided_recorded_and_traced(
    helpdesk: Helpdesk,
) -> None:
    counter = helpdesk.scratch / "traced.txt"
    calls = [
        ["find_order", {"order_id": "o-1"}],
        ["grant_refund", {"order_id": "o-1", "amount": 20}],
    ]
    result = helpdesk.ask(calls, counter=str(counter))
    said = answer(result)
    assert "call_0=success:order o-1: shipped" in said
    assert "call_1=success:refunded 20.00 on o-1" in said
    assert sorted(counted(counter)) == ["lookup o-1", "refund o-1 20.0"]
    requested = of_message(helpdesk, "tool.requested", result["message_id"])
    executed = of_message(helpdesk, "tool.executed", result["message_id"])
    assert set(requested) == set(executed) == {"call_0", "call_1"}
    for record in executed.values():
        assert record["decision"] == "ok"
        assert record["rule"].startswith("policy.csv:")
        assert record["lineage"]["policy_version"]
        assert record["run_id"] == result["run_id"]
    assert executed["call_1"]["outputs"] == "refunded 20.00 on o-1"
    # the span of each call: the replica's execute_tool, under the run, with the model's call id
    spans = helpdesk.receiver.wait_for(
        lambda got: sum(s.name.startswith("execute_tool ") for s in got) >= 2, 30
    )
    tools = {
        s.attributes.get("gen_ai.tool.call.id"): s
        for s in spans
        if s.name in {"execute_tool find_order", "execute_tool grant_refund"}
        and s.attributes.get("agentd.run.id") == result["run_id"]
    }
    assert set(tools) == {"call_0", "call_1"}
    run = next(
        s
        for s in spans
        if s.name == f"invoke_agent {AGENT}"
        and s.attributes.get("agentd.run.id") == result["run_id"]
    )
    assert all(s.parent_span_id == run.span_id for s in tools.values())
    # the gateway's decision is a child of the call's span, and the records carry its ids
    begins = {s.parent_span_id for s in spans if s.name.startswith("tool.begin ")}
    assert {s.span_id for s in tools.values()} <= begins


def test_a_tool_without_a_rule_is_denied_and_the_run_goes_on(helpdesk: Helpdesk) -> None:
    counter = helpdesk.scratch / "denied.txt"
    result = helpdesk.ask([["close_account", {"customer_id": "cu-9"}]], counter=str(counter))
    said = answer(result)  # the run finished: the model got the refusal and answered
    assert said.startswith("call_0=error:Error: agentd refused close_account: policy_denied")
    assert counted(counter) == []
    denied = of_message(helpdesk, "tool.denied", result["message_id"])
    assert denied["call_0"]["decision"] == "policy_denied"
    assert denied["call_0"]["lineage"]["policy_version"]


def test_a_constraint_violation_reaches_the_model_as_a_tool_message(helpdesk: Helpdesk) -> None:
    counter = helpdesk.scratch / "constrained.txt"
    calls = [["grant_refund", {"order_id": "o-2", "amount": 500}]]
    said = answer(helpdesk.ask(calls, counter=str(counter)))
    assert "call_0=error:" in said and "(rule constraints.toml:" in said
    assert counted(counter) == []


def _waiting(helpdesk: Helpdesk, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = helpdesk.daemon.agentctl("--json", "approvals")
        assert out.returncode == 0, out.stderr
        for entry in json.loads(out.stdout):
            if entry["args"].get("order_id") == order_id:
                found: dict[str, Any] = entry
                return found
        time.sleep(0.1)
    raise AssertionError(f"{order_id}'s refund never showed up in agentctl approvals")


def _in_background(helpdesk: Helpdesk, calls: list[list[Any]], **script: Any) -> Any:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(helpdesk.ask(calls, **script)))
    thread.start()
    return thread, box


def test_an_approval_round_trip_through_agentctl(helpdesk: Helpdesk) -> None:
    counter = helpdesk.scratch / "approved.txt"
    thread, box = _in_background(
        helpdesk, [["grant_refund", {"order_id": "o-3", "amount": 75}]], counter=str(counter)
    )
    waiting = _waiting(helpdesk, "o-3")
    assert waiting["tool"] == "grant_refund" and waiting["call_id"] == "call_0"
    assert counted(counter) == []  # parked: the body has not run
    assert helpdesk.daemon.agentctl("approve", waiting["id"]).returncode == 0
    thread.join(60)
    assert "call_0=success:refunded 75.00 on o-3" in answer(box)
    assert counted(counter) == ["refund o-3 75.0"]

    thread, box = _in_background(
        helpdesk, [["grant_refund", {"order_id": "o-4", "amount": 80}]], counter=str(counter)
    )
    waiting = _waiting(helpdesk, "o-4")
    denied = helpdesk.daemon.agentctl("deny", waiting["id"], "--reason", "not this one")
    assert denied.returncode == 0, denied.stderr
    thread.join(60)
    said = answer(box)
    assert "call_0=error:" in said and "approval_denied" in said and "not this one" in said
    assert counted(counter) == ["refund o-3 75.0"]


def test_a_rerun_after_a_crash_gets_the_stored_results(helpdesk: Helpdesk) -> None:
    counter = helpdesk.scratch / "crashed.txt"
    marker = helpdesk.scratch / "crashed-once"
    calls = [
        ["find_order", {"order_id": "o-5"}],
        ["grant_refund", {"order_id": "o-5", "amount": 5}],
    ]
    result = helpdesk.ask(calls, counter=str(counter), crash_once=str(marker))
    assert marker.exists(), "the first run must have died after its tool calls"
    said = answer(result)
    assert "call_0=success:order o-5: shipped" in said and "call_1=success:refunded 5.00" in said
    assert sorted(counted(counter)) == ["lookup o-5", "refund o-5 5.0"]  # each body ran once
    mine = records_of(helpdesk, "tool.executed", result["message_id"])
    decisions = sorted((r["attributes"]["call_id"], r["decision"]) for r in mine)
    assert decisions == [
        ("call_0", "ok"),
        ("call_0", "replayed"),
        ("call_1", "ok"),
        ("call_1", "replayed"),
    ]
