"""Operators' views of the decision log through the real daemon and agentctl: `trace ID` as a
tree (conversation -> run -> tool steps with policy answers), `trace --follow --agent`, and
`runs` derived from routed messages and the run ledger."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agentd.trace import REDACTED
from tests.harness import REPO, TEST_AGENTS, DaemonProcess, free_port, running_daemon, write_config

pytestmark = pytest.mark.integration

APPLICANT = {"applicant_id": "A-4711"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("views")
    agents = directory / "agents"
    agents.mkdir()
    (agents / "underwriter").symlink_to(TEST_AGENTS / "toolrunner")
    (agents / "echo").symlink_to(REPO / "agents" / "echo")
    (agents / "poison").symlink_to(TEST_AGENTS / "poison")
    config = write_config(
        directory,
        agents_dir=agents,
        policy="enforce",
        extra=(
            f'[tools]\ndir = "{REPO / "tools"}"\n'
            f"[metrics]\nport = {free_port()}\n"
            "[trace]\nredact_patterns = ['sk-[A-Za-z0-9]{20,}']\n"
            "[autoscale]\nenabled = false\n"
        ),
    )
    env = {
        "AGENTD_LOAN_LEDGER": str(directory / "ledger.jsonl"),
        "POISON_FIX": str(directory / "no-fix-yet"),
    }
    with running_daemon(config, env=env) as d:
        yield d
        assert d.stop() == 0


def ask(daemon: DaemonProcess, agent: str, payload: dict[str, Any], conversation: str) -> Any:
    out = daemon.agentctl(
        "--json", "ask", agent, json.dumps(payload), "--conversation", conversation, timeout_s=90
    )
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()}"
    result = json.loads(out.stdout)
    assert result["ok"], result
    return result


def eventually(check: Any, timeout_s: float = 5.0) -> Any:
    """Poll `check` until it returns something truthy: records reach the log within the
    recorder's flush interval, after the run's reply."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_trace_of_a_conversation_is_a_tree_of_its_run_and_tool_steps(
    daemon: DaemonProcess,
) -> None:
    conversation = "conv-tree-1"
    ask(daemon, "underwriter", {"tool": "credit.score", "args": APPLICANT}, conversation)

    def traced() -> str | None:
        out = daemon.agentctl("trace", conversation)
        return out.stdout if out.returncode == 0 and "tool.executed" in out.stdout else None

    text = eventually(traced)
    assert text, daemon.agentctl("trace", conversation).stderr
    lines = text.splitlines()
    assert lines[0].startswith(f"conversation {conversation}: "), text

    def at(kind: str) -> int:
        return next(i for i, line in enumerate(lines) if f" {kind} " in line)

    def depth(index: int) -> int:  # tree drawing takes three characters per level
        line = lines[index]
        return (len(line) - len(line.lstrip("│├└─ "))) // 3

    routed, started, finished = at("message.routed"), at("run.started"), at("run.finished")
    requested, executed = at("tool.requested"), at("tool.executed")
    # spans nest: the routed message, then the run (invoke_agent) under it, then the tool call
    # (execute_tool) under the run; in time order within each
    assert depth(routed) < depth(started) == depth(finished) < depth(requested)
    assert depth(requested) == depth(executed)
    # (the routed record's time comes from another process than the run's: not compared)
    assert started < requested < executed < finished
    for index in (requested, executed):
        assert "credit.score" in lines[index]
    assert "rule: " in lines[requested] or "rule: " in lines[executed]
    assert "[agent=" in lines[started]  # lineage: the agent version that ran
    assert "policy=" in text  # lineage: the policy version that decided


def test_trace_of_a_run_holds_only_that_run(daemon: DaemonProcess) -> None:
    first = ask(daemon, "underwriter", {"tool": "credit.score", "args": APPLICANT}, "conv-run-a")
    ask(daemon, "underwriter", {"tool": "credit.score", "args": APPLICANT}, "conv-run-a")

    def traced() -> dict[str, Any] | None:
        out = daemon.agentctl("--json", "trace", first["run_id"])
        if out.returncode != 0:
            return None
        found: dict[str, Any] = json.loads(out.stdout)
        return found if any(r["kind"] == "tool.executed" for r in found["records"]) else None

    found = eventually(traced)
    assert found, "the run's records never showed up"
    assert found["matched"] == ["run"]
    assert {r["run_id"] for r in found["records"]} == {first["run_id"]}
    seqs = [r["seq"] for r in found["records"]]
    assert seqs == sorted(seqs)
    # the message id `agentctl send` prints stands for the run that handled it
    by_message = daemon.agentctl("--json", "trace", first["message_id"])
    assert by_message.returncode == 0, by_message.stderr
    answer = json.loads(by_message.stdout)
    assert answer["matched"] == ["message"]
    assert {r["run_id"] for r in answer["records"]} == {first["run_id"]}


def test_trace_of_an_unknown_id_says_so(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("trace", "no-such-id")
    assert out.returncode == 1 and "no run, trace, conversation, message or record" in out.stderr


def test_runs_lists_finished_runs_from_the_ledger_with_filters(daemon: DaemonProcess) -> None:
    result = ask(daemon, "underwriter", {"tool": "credit.score", "args": APPLICANT}, "conv-runs")
    ask(daemon, "echo", {"text": "hi"}, "conv-runs-echo")

    def listed() -> list[dict[str, Any]]:
        out = daemon.agentctl("--json", "runs", "--agent", "underwriter", "--since", "10m")
        assert out.returncode == 0, out.stderr
        runs: list[dict[str, Any]] = json.loads(out.stdout)
        return [r for r in runs if r["run_id"] == result["run_id"]]

    mine = eventually(listed)
    assert len(mine) == 1, mine
    run = mine[0]
    assert run["status"] == "ok" and run["agent"] == "underwriter"
    assert run["conversation_id"] == "conv-runs" and run["message_id"] == result["message_id"]
    assert run["duration_s"] is not None and 0 < run["duration_s"] < 60
    out = daemon.agentctl("--json", "runs", "--agent", "underwriter")
    assert all(r["agent"] == "underwriter" for r in json.loads(out.stdout))
    failed = daemon.agentctl("--json", "runs", "--status", "failed")
    assert result["run_id"] not in {r["run_id"] for r in json.loads(failed.stdout)}
    table = daemon.agentctl("runs", "--agent", "underwriter")
    assert table.returncode == 0 and result["run_id"] in table.stdout and " ok " in table.stdout


def test_follow_tails_live_decisions_of_one_agent(daemon: DaemonProcess) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "agentd.cli.agentctl", "--url", daemon.url]
        + ["--creds", str(daemon.admin_creds), "--json", "trace"]
        + ["--follow", "--agent", "underwriter", "--count", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stderr is not None
        ready = follower.stderr.readline()  # printed once the subscription is in place
        assert ready.startswith("following decisions of underwriter"), ready
        ask(daemon, "echo", {"text": "not followed"}, "conv-follow-echo")
        ask(daemon, "underwriter", {"tool": "credit.score", "args": APPLICANT}, "conv-follow")
        out, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(5)
    assert follower.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 3
    assert {r["agent"] for r in records} == {"underwriter"}
    assert any(r.get("conversation_id") == "conv-follow" for r in records)
    assert all("inputs" not in r and "outputs" not in r for r in records)  # summaries only


def test_the_live_feed_redacts_configured_secrets(daemon: DaemonProcess) -> None:
    secret = "sk-" + "Q" * 24
    follower = subprocess.Popen(
        [sys.executable, "-m", "agentd.cli.agentctl", "--url", daemon.url]
        + ["--creds", str(daemon.admin_creds), "--json", "trace"]
        + ["--follow", "--agent", "echo", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stderr is not None
        assert follower.stderr.readline().startswith("following decisions of echo")
        ask(daemon, "echo", {"text": "hi"}, f"conv-{secret}")
        out, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(5)
    assert follower.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2
    assert secret not in out
    assert any(REDACTED in r.get("conversation_id", "") for r in records), records


def test_a_run_that_kept_failing_is_listed_dead_with_its_error(daemon: DaemonProcess) -> None:
    out = daemon.agentctl(
        "--json", "send", "poison", json.dumps({"poison": True}), "--wait", timeout_s=90
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] is False  # given up after max_deliveries attempts
    out = daemon.agentctl("--json", "runs", "--agent", "poison", "--status", "dead")
    assert out.returncode == 0, out.stderr
    (dead,) = [r for r in json.loads(out.stdout) if r["message_id"] == result["message_id"]]
    assert "cannot digest poison" in dead["error"]
    ok = daemon.agentctl("--json", "runs", "--agent", "poison", "--status", "ok")
    assert result["message_id"] not in {r["message_id"] for r in json.loads(ok.stdout)}
