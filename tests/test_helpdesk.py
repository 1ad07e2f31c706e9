"""The help-desk example end to end: the daemon in the default configuration's shape (enforced
policy from policies/, the tools directory, the refunds MCP server mounted as
[tools.mcp.refunds], a `tiny` model pool), agents/helpdesk asked by an operator.

- With a scripted model (fake_vllm.py answering the tool each step names): every tool call of
  the run has its `tool.*` records, a refund above 100 EUR parks until `agentctl approve`, one
  over the 500 EUR cap is denied and reaches the model as a tool error while the run goes on,
  and every LLM call is in the run's trace.
- With the tiny random-weight model on vLLM's CPU build: the same agent runs through, every
  tool call strict and decided.
"""

from __future__ import annotations

import json
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
    running_daemon,
    write_config,
)
from tests.inference.pool_helpers import FAKE_VLLM
from tests.inference.vllm_server import vllm_python

SERVER = REPO / "mcp_servers" / "refunds" / "server.py"
POLICY_TOOL = "refunds.refund_policy"


pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
]


def helpdesk_config(directory: Path, pool: str) -> Path:
    agents = directory / "agents"
    agents.mkdir()
    (agents / "helpdesk").symlink_to(REPO / "agents" / "helpdesk")
    extra = f"""
[autoscale]
enabled = false

[metrics]
port = {free_port()}

[tools]
dir = "{REPO / "tools"}"

[tools.mcp.refunds]
command = "python"
args = ["{SERVER}"]

{pool}
"""
    return write_config(directory, agents_dir=agents, policy="enforce", extra=extra)


def wait_for_pool(daemon: DaemonProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = daemon.agentctl("--json", "models")
        if out.returncode == 0:
            [pool] = json.loads(out.stdout)
            if [m["state"] for m in pool["members"]] == ["ready"]:
                return
        time.sleep(0.5)
    raise AssertionError(f"the tiny pool never got ready\n{daemon.log()}")


def ask_in_background(
    daemon: DaemonProcess, text: str, conversation: str
) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}
    state = json.dumps({"messages": [{"role": "user", "content": text}]})

    def ask() -> None:
        out = daemon.agentctl(
            "--json", "ask", "helpdesk", state, "--conversation", conversation, timeout_s=240
        )
        box["returncode"], box["stderr"] = out.returncode, out.stderr
        if out.returncode == 0:
            box.update(json.loads(out.stdout))

    thread = threading.Thread(target=ask)
    thread.start()
    return thread, box


def waiting_approval(daemon: DaemonProcess, box: dict[str, Any], timeout_s: float) -> Any:
    """The waiting `issue_refund` call, or None once the run ended without one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = daemon.agentctl("--json", "approvals")
        assert out.returncode == 0, out.stderr
        for entry in json.loads(out.stdout):
            if entry["agent"] == "helpdesk" and entry["tool"] == "issue_refund":
                return entry
        if "returncode" in box:
            return None
        time.sleep(0.2)
    raise AssertionError(f"no refund waits for approval\n{daemon.log()}")


def run_records(daemon: DaemonProcess, run_id: str) -> list[dict[str, Any]]:
    time.sleep(0.5)  # the recorder flushes within its interval
    return [r for r in decision_records(daemon.dir / "state") if r.get("run_id") == run_id]


def ledger(daemon: DaemonProcess) -> list[dict[str, Any]]:
    path = daemon.dir / "state" / "scratch" / "helpdesk" / "refunds.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- the scripted model: deterministic paths through policy ---------------------------------

SCRIPT_ARGS: dict[str, dict[str, Any]] = {
    "lookup_order": {"order_id": "A-1002"},
    "refund_policy": {"category": "electronics", "days_since_delivery": 12, "order_total": 349.0},
    "issue_refund": {"order_id": "A-1002", "amount": 349.0, "reason": "damaged"},
}


def write_script(path: Path, refund: dict[str, Any]) -> None:
    steps = [SCRIPT_ARGS["lookup_order"], SCRIPT_ARGS["refund_policy"], refund]
    # no "name": the fake calls the tool the graph's tool_choice names (whatever the MCP
    # adapter calls the refunds tool)
    script: list[dict[str, Any]] = [{"tool_calls": [{"args": args}]} for args in steps]
    script.append({"content": "Your refund is on its way."})
    path.write_text(json.dumps(script))


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Path]]:
    directory = tmp_path_factory.mktemp("helpdesk")
    script = directory / "script.json"
    write_script(script, SCRIPT_ARGS["issue_refund"])
    command = json.dumps([sys.executable, str(FAKE_VLLM)])
    pool = f"""
[models.tiny]
model = "fake-org/tiny"
launcher = {{ command = {command}, env = {{ FAKE_VLLM_CHAT_SCRIPT = "{script}" }} }}
device = "cpu"
replicas = {{ min = 1, max = 1 }}
autoscale = {{ enabled = false }}
"""
    with running_daemon(helpdesk_config(directory, pool)) as daemon:
        wait_for_pool(daemon, 40)
        yield daemon, script
        assert daemon.stop() == 0


def test_a_refund_above_the_threshold_waits_for_a_person(
    scripted: tuple[DaemonProcess, Path],
) -> None:
    daemon, script = scripted
    write_script(script, SCRIPT_ARGS["issue_refund"])  # 349 EUR: approval above 100
    thread, box = ask_in_background(daemon, "My headphones (A-1002) arrived broken.", "hd-1")
    waiting = waiting_approval(daemon, box, 60)
    assert waiting is not None, box
    assert waiting["args"]["amount"] == 349.0
    assert str(waiting["rule"]).startswith("constraints.toml:81"), waiting
    assert ledger(daemon) == []  # nothing refunded while it waits
    approved = daemon.agentctl("approve", waiting["id"])
    assert approved.returncode == 0, approved.stderr
    thread.join(120)
    assert box.get("returncode") == 0 and box["ok"], box
    run_id = box["run_id"]

    [refund] = ledger(daemon)
    assert refund["order_id"] == "A-1002" and refund["amount"] == 349.0
    records = run_records(daemon, run_id)
    by_tool: dict[str, set[str]] = {}
    for record in records:
        if record["kind"].startswith("tool."):
            tool = (record.get("attributes") or {}).get("tool") or record.get("tool")
            by_tool.setdefault(str(tool), set()).add(record["kind"])
    assert {"tool.requested", "tool.executed"} <= by_tool["lookup_order"], by_tool
    assert {"tool.requested", "tool.executed"} <= by_tool[POLICY_TOOL], by_tool
    assert {"tool.approval_requested", "tool.approved", "tool.executed"} <= by_tool[
        "issue_refund"
    ], by_tool
    # the LLM calls of the run: three steps and the answer, in its trace
    calls = [r for r in records if r["kind"] == "llm.call"]
    assert len(calls) == 4 and {c["conversation_id"] for c in calls} == {"hd-1"}, calls


def test_a_refund_over_the_cap_is_denied_and_the_model_hears_it(
    scripted: tuple[DaemonProcess, Path],
) -> None:
    daemon, script = scripted
    before = len(ledger(daemon))
    write_script(script, {"order_id": "A-1003", "amount": 1299.0, "reason": "late"})
    thread, box = ask_in_background(daemon, "Refund my coat (A-1003), it came late.", "hd-2")
    assert waiting_approval(daemon, box, 60) is None  # over the cap: no approval can help
    thread.join(120)
    assert box.get("returncode") == 0 and box["ok"], box
    records = run_records(daemon, box["run_id"])
    [denied] = [r for r in records if r["kind"] == "tool.denied"]
    assert str(denied["rule"]).startswith("constraints.toml:70"), denied
    assert len(ledger(daemon)) == before
    # the denial came back as a tool message and the model answered after it
    assert len([r for r in records if r["kind"] == "llm.call"]) == 4
    assert any(r["kind"] == "run.finished" for r in records)


# --- the tiny model on vLLM's CPU build ------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.skipif(not vllm_python().exists(), reason=f"no vLLM at {vllm_python()}")
def test_the_tiny_model_drives_the_help_desk_through_governed_calls(
    tmp_path: Path,
) -> None:
    from agentd.inference import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny-model")
    pool = f"""
[models.tiny]
model = "{model_dir}"
launcher = {{ python = "{vllm_python()}" }}
device = "cpu"
cpu_cores_per_replica = 1
kv_cache_bytes = 67108864
max_model_len = 2048
replicas = {{ min = 1, max = 1 }}
startup_timeout_s = 240.0
autoscale = {{ enabled = false }}
"""
    with running_daemon(helpdesk_config(tmp_path, pool)) as daemon:
        wait_for_pool(daemon, 240)
        thread, box = ask_in_background(daemon, "Please refund order A-1002.", "hd-tiny")
        waiting = waiting_approval(daemon, box, 120)
        if waiting is not None:  # the random amount fell between 100 and 500
            assert daemon.agentctl("approve", waiting["id"]).returncode == 0
        thread.join(180)
        assert box.get("returncode") == 0 and box["ok"], f"{box}\n{daemon.log()}"
        records = run_records(daemon, box["run_id"])
        requested = [r for r in records if r["kind"] in ("tool.requested", "tool.denied")]
        tools = [(r.get("attributes") or {}).get("tool") or r.get("tool") for r in requested]
        # the procedure's three steps, each strict (valid arguments) and decided
        for name in ("lookup_order", POLICY_TOOL, "issue_refund"):
            assert name in tools, tools
        for record in records:
            if record["kind"] == "tool.denied":
                assert str(record["rule"]).startswith("constraints.toml:"), record
        assert len([r for r in records if r["kind"] == "llm.call"]) == 4
        assert daemon.stop() == 0


def test_the_walkthrough_in_docs_agents_md_runs_as_written(
    scripted: tuple[DaemonProcess, Path],
) -> None:
    """docs/agents.md's "Run it" block (marked `needs model`, so the doc tour only checks its
    syntax) against this daemon: the approval id it approves is the one `approvals` shows."""
    from dataclasses import replace

    from tests.docs.doc_blocks import blocks_in
    from tests.docs.doc_tour import Scratch, Tour, install_commands

    daemon, script = scripted
    write_script(script, SCRIPT_ARGS["issue_refund"])  # 349 EUR: waits for a person
    [block] = [b for b in blocks_in(REPO / "docs" / "agents.md") if "model" in b.needs]
    # a conversation of its own: the other tests here use hd-1
    block.commands = [replace(c, text=c.text.replace("hd-1", "hd-doc")) for c in block.commands]
    block.commands = [
        replace(c, expected=[line.replace("hd-1", "hd-doc") for line in c.expected or []] or None)
        for c in block.commands
    ]
    install_commands(daemon.dir)
    tour = Tour(Scratch(daemon.dir, 0, 0), model=True)
    tour.run_block(block)
    assert tour.ran == len(block.commands) and not tour.failures, "\n".join(tour.failures)
