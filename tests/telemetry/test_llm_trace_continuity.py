"""An unmodified ChatOpenAI inside a replica carries the run's trace to the LLM gateway.

The graph (tests/agents/chatter) builds `ChatOpenAI(model="fake")` at import and calls it from
an async node (httpx's AsyncClient) and a sync node (Client, in LangGraph's thread): the worker
instrumented both before importing the graph. The gateway's `llm.call` records carry the run
and conversation ids and the run's `invoke_agent` span as parent, so `agentctl trace RUN` and
`agentctl trace CONVERSATION` show them in the run's tree. The model pool is fake_vllm.py (a
real pool manager and gateway in front of it); the vLLM path of the same spans is
test_vllm_propagation.py.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentd.audit import TraceNode, build_trace_tree
from agentd.trace import DecisionRecord
from tests.harness import TEST_AGENTS, DaemonProcess, free_port, running_daemon, write_config
from tests.inference.pool_helpers import FAKE_VLLM

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GATEWAY_PORT = free_port()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("llmtrace")
    agents = directory / "agents"
    agents.mkdir()
    (agents / "chatter").symlink_to(TEST_AGENTS / "chatter")
    command = json.dumps([sys.executable, str(FAKE_VLLM)])
    extra = f"""
[gateway]
port = {GATEWAY_PORT}

[autoscale]
enabled = false

[models.fake]
model = "fake-org/fake-model"
launcher = {{ command = {command} }}
device = "cpu"
replicas = {{ min = 1, max = 1 }}
autoscale = {{ enabled = false }}
"""
    config = write_config(directory, agents_dir=agents, extra=extra)
    with running_daemon(config) as d:
        wait_for_pool(d)
        yield d
        assert d.stop() == 0


def wait_for_pool(daemon: DaemonProcess, timeout_s: float = 40.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = daemon.agentctl("--json", "models")
        if out.returncode == 0 and [m["state"] for m in json.loads(out.stdout)[0]["members"]] == [
            "ready"
        ]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the fake pool never got ready\n{daemon.log()}")


def traced(daemon: DaemonProcess, key: str, calls: int) -> list[dict[str, Any]]:
    """`agentctl --json trace KEY`'s records once `calls` llm.call records are among them."""
    deadline = time.monotonic() + 10
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        out = daemon.agentctl("--json", "trace", key)
        if out.returncode == 0:
            records = json.loads(out.stdout)["records"]
            if sum(r["kind"] == "llm.call" for r in records) >= calls:
                return records
        time.sleep(0.1)
    raise AssertionError(f"trace {key}: no {calls} llm.call records in {records}")


def find_node(node: TraceNode, key: str) -> TraceNode:
    if node.key == key:
        return node
    for child in node.children:
        try:
            return find_node(child, key)
        except LookupError:
            continue
    raise LookupError(key)


def test_the_runs_llm_calls_are_in_its_trace(daemon: DaemonProcess) -> None:
    conversation = "conv-llm-1"
    out = daemon.agentctl(
        "--json", "ask", "chatter", json.dumps({"question": "hi"}),
        "--conversation", conversation, timeout_s=60,
    )  # fmt: skip
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()}"
    result = json.loads(out.stdout)
    assert result["ok"], result
    assert result["output"]["first"] == "x" and result["output"]["second"] == "x", result
    run_id = result["run_id"]

    records = traced(daemon, run_id, calls=2)
    started = next(r for r in records if r["kind"] == "run.started")
    calls = [r for r in records if r["kind"] == "llm.call"]
    assert len(calls) == 2, calls
    for call in calls:
        # written by the daemon (the gateway), joined to the replica's run by its headers
        assert call["agent"] == "chatter" and call["decision"] == "ok", call
        assert call["run_id"] == run_id and call["conversation_id"] == conversation
        assert call["trace_id"] == started["trace_id"]
        assert call["parent_span_id"] == started["span_id"]  # the run's invoke_agent span
        assert call["span_id"] != started["span_id"]  # the gateway's own chat span

    # the tree agentctl draws: both calls under the run's span
    bodies = [{k: v for k, v in r.items() if k != "seq"} for r in records]
    tree = build_trace_tree(run_id, [DecisionRecord.model_validate(b) for b in bodies])
    run_span = find_node(tree, started["span_id"])
    under = {c.key for c in run_span.children}
    assert {c["span_id"] for c in calls} <= under

    # and the conversation's trace holds them as well, in text as an operator reads it
    assert len([r for r in traced(daemon, conversation, 2) if r["kind"] == "llm.call"]) == 2
    text = daemon.agentctl("trace", conversation)
    assert text.returncode == 0 and text.stdout.count("llm.call") == 2, text.stdout


def test_a_header_claiming_a_run_needs_the_gateway_token(daemon: DaemonProcess) -> None:
    """Only a holder of a replica's token files records under a run; without one the call is
    refused (401) and its record names no run."""
    url = f"http://127.0.0.1:{GATEWAY_PORT}/v1"
    headers = {"baggage": "agentd.run_id=forged-run,agentd.conversation_id=forged"}
    answer = httpx.post(
        f"{url}/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )
    assert answer.status_code == 401
    out = daemon.agentctl("--json", "trace", "forged-run")
    assert out.returncode == 1 and "no run" in out.stderr
