"""OpenTelemetry through the real daemon: a conversation that crosses three agent processes,
with tool calls, exported over OTLP/HTTP to a receiver the test runs, is one trace with the
expected parent/child structure, GenAI names and attributes, policy answers, and no secret."""

from __future__ import annotations

import json
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
from tests.telemetry.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.integration

SECRET = "sk-Zq8r4LmN2xYt7VbW1cKd9PfH"
HOPS = {"intake": ["loan.approve"], "underwriter": ["credit.score"], "compliance": ["sql.query"]}


def mount_hop_agents(directory: Path) -> Path:
    """intake -> underwriter -> compliance, each a copy of tests/agents/hop under that name (the
    example policy's names: intake may send to underwriter, underwriter to compliance)."""
    agents = directory / "agents"
    for name, tools in HOPS.items():
        folder = agents / name
        folder.mkdir(parents=True)
        (folder / "hop_graph.py").symlink_to(TEST_AGENTS / "hop" / "hop_graph.py")
        (folder / "agent.toml").write_text(
            f'name = "{name}"\ngraph = "hop_graph:build"\ncheckpoint = false\n'
            f"autoscale = false\ntools = {json.dumps(tools)}\n"
        )
    return agents


def otlp_config(
    receiver: OtlpReceiver, *, enabled: bool, interval_s: float, content: bool = False
) -> str:
    return (
        "[autoscale]\nenabled = false\n"
        f'[tools]\ndir = "{REPO / "tools"}"\n'
        "[trace]\nredact_patterns = ['sk-[A-Za-z0-9]{20,}']\n"
        f"[trace.otlp]\nenabled = {str(enabled).lower()}\n"
        f'endpoint = "{receiver.url}"\nexport_interval_s = {interval_s}\n'
        f"capture_content = {str(content).lower()}\n"
        'headers = { "x-api-key" = "collector-key" }\n'
    )


def send(daemon: DaemonProcess, to: str, payload: dict[str, Any]) -> dict[str, Any]:
    out = daemon.agentctl("send", to, json.dumps(payload), "--wait", timeout_s=60)
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@dataclass
class Conversation:
    output: dict[str, Any]
    spans: list[ReceivedSpan]
    receiver: OtlpReceiver
    state_dir: Path

    def one(self, name: str) -> ReceivedSpan:
        found = [s for s in self.spans if s.name == name]
        assert len(found) == 1, (name, [s.name for s in self.spans])
        return found[0]


EXPECTED = {
    "route intake",
    "invoke_agent intake",
    "execute_tool loan.approve",
    "route underwriter",
    "invoke_agent underwriter",
    "execute_tool credit.score",
    "route compliance",
    "invoke_agent compliance",
    "execute_tool sql.query",
}


@pytest.fixture(scope="module")
def conversation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conversation]:
    directory = tmp_path_factory.mktemp("otel")
    with otlp_receiver() as receiver:
        config = write_config(
            directory,
            agents_dir=mount_hop_agents(directory),
            policy="enforce",
            extra=otlp_config(receiver, enabled=True, interval_s=0.2, content=True),
        )
        query = f"SELECT name FROM applications WHERE name = '{SECRET}'"
        payload = {
            "memo": f"customer token {SECRET}",
            "tool": "loan.approve",  # intake may not: policy denies it
            "args": {"applicant_id": "A-1001", "amount": 100, "payee": "acct-1001"},
            "next": {
                "to": "underwriter",
                "payload": {
                    "tool": "credit.score",
                    "args": {"applicant_id": "A-1001"},
                    "next": {
                        "to": "compliance",
                        "payload": {"tool": "sql.query", "args": {"query": query}},
                    },
                },
            },
        }
        with running_daemon(config) as daemon:
            output = send(daemon, "intake", payload)
            spans = receiver.wait_for(lambda got: {s.name for s in got} >= EXPECTED, 30)
            yield Conversation(output, spans, receiver, daemon.dir / "state")
            assert daemon.stop() == 0


def test_the_conversation_ran_across_three_agents(conversation: Conversation) -> None:
    out = conversation.output
    assert out["refused"] == "policy_denied"  # intake's loan.approve
    assert "score" in out["next"]["result"]  # underwriter's credit.score
    assert out["next"]["next"]["result"] == []  # compliance's sql.query


def test_three_agents_give_one_trace_with_the_calls_parent_child_structure(
    conversation: Conversation,
) -> None:
    c = conversation
    spans = {name: c.one(name) for name in EXPECTED}
    assert len({s.trace_id for s in spans.values()}) == 1
    assert len(spans["route intake"].trace_id) == 32

    def parent(child: str, of: str) -> None:
        assert spans[child].parent_span_id == spans[of].span_id, (child, of)

    assert spans["route intake"].parent_span_id == ""  # agentctl send starts the trace
    parent("invoke_agent intake", "route intake")
    parent("execute_tool loan.approve", "invoke_agent intake")
    parent("route underwriter", "invoke_agent intake")
    parent("invoke_agent underwriter", "invoke_agent intake")  # the router keeps the context
    parent("execute_tool credit.score", "invoke_agent underwriter")
    parent("route compliance", "invoke_agent underwriter")
    parent("invoke_agent compliance", "invoke_agent underwriter")
    parent("execute_tool sql.query", "invoke_agent compliance")
    # the spans came from four processes: the daemon and one replica of each agent
    services = {(s.resource["service.name"], s.resource.get("gen_ai.agent.name")) for s in c.spans}
    assert {("agentd", None), ("agentd-worker", "intake"), ("agentd-worker", "compliance")} <= (
        services
    )
    # [trace.otlp].headers went with every export, the replicas' too (through their env)
    keys = [{k.lower(): v for k, v in r.items()}.get("x-api-key") for r in c.receiver.requests]
    assert keys and set(keys) == {"collector-key"}


def test_spans_carry_genai_and_policy_attributes(conversation: Conversation) -> None:
    c = conversation
    run = c.one("invoke_agent underwriter")
    assert run.kind == "INTERNAL"
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.agent.name"] == "underwriter"
    assert run.attributes["gen_ai.provider.name"] == "agentd"
    assert run.attributes["agentd.message.from"] == "intake"
    conversation_id = run.attributes["gen_ai.conversation.id"]
    assert c.one("invoke_agent compliance").attributes["gen_ai.conversation.id"] == conversation_id

    tool = c.one("execute_tool credit.score").attributes
    assert tool["gen_ai.operation.name"] == "execute_tool"
    assert tool["gen_ai.tool.name"] == "credit.score"
    assert tool["gen_ai.tool.call.id"] == "c1"
    assert tool["gen_ai.agent.name"] == "underwriter"
    assert tool["agentd.policy.decision"] == "allow"
    assert tool["agentd.policy.rule"] and tool["agentd.policy.version"]
    assert tool["agentd.tool.outcome"] == "ok"
    steps = [name for name, _ in c.one("execute_tool credit.score").events]
    assert steps == ["tool.requested", "tool.executed"]

    denied = c.one("execute_tool loan.approve")
    assert denied.attributes["agentd.policy.decision"] == "deny"
    assert denied.attributes["error.type"] == "policy_denied"
    assert denied.status_code == 2  # ERROR

    route = c.one("route underwriter")
    assert route.kind == "PRODUCER"
    assert route.attributes["agentd.route.decision"] == "routed"
    assert route.attributes["agentd.policy.decision"] == "allow"


def test_decision_records_carry_the_span_ids(conversation: Conversation) -> None:
    c = conversation
    tool, run = c.one("execute_tool credit.score"), c.one("invoke_agent underwriter")
    deadline = time.monotonic() + 10
    while True:
        executed = [
            r
            for r in decision_records(c.state_dir, "tool.executed")
            if r.get("span_id") == tool.span_id
        ]
        if executed or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(executed) == 1
    assert executed[0]["trace_id"] == tool.trace_id
    assert executed[0]["parent_span_id"] == run.span_id
    routed = decision_records(c.state_dir, "message.routed")
    routed = [r for r in routed if r["agent"] == "compliance"]
    assert routed and routed[-1]["span_id"] == c.one("route compliance").span_id
    assert routed[-1]["trace_id"] == tool.trace_id


def test_a_configured_secret_never_appears_in_exported_spans(conversation: Conversation) -> None:
    c = conversation
    bodies = b"".join(c.receiver.bodies)
    assert SECRET.encode() not in bodies
    assert SECRET[3:15].encode() not in bodies  # not even a piece of it
    # content capture is on: the message, the tool's arguments and its query were exported,
    # with the secret replaced
    query = c.one("execute_tool sql.query").attributes["gen_ai.tool.call.arguments"]
    assert "[REDACTED]" in query and "SELECT name FROM applications" in query
    assert "[REDACTED]" in c.one("invoke_agent intake").attributes["gen_ai.input.messages"]
    assert SECRET not in json.dumps(decision_records(c.state_dir))


def test_export_is_off_by_default_and_sends_nothing(tmp_path: Path) -> None:
    with otlp_receiver() as receiver:
        # the endpoint is the receiver's, but export is off (the default)
        extra = otlp_config(receiver, enabled=False, interval_s=0.05)
        config = write_config(tmp_path, extra=extra)
        with running_daemon(config) as daemon:
            assert send(daemon, "echo", {"text": "hi"}) == {"text": "hi"}
            assert daemon.stop() == 0  # a flush on shutdown would send now, if export were on
        assert receiver.requests == [] and receiver.spans == []
    # spans are still made: their ids reach the decision log
    routed = decision_records(tmp_path / "state", "message.routed")
    assert routed and len(routed[0]["trace_id"]) == 32 and len(routed[0]["span_id"]) == 16


def test_spans_buffered_at_shutdown_are_exported(tmp_path: Path) -> None:
    with otlp_receiver() as receiver:
        extra = otlp_config(receiver, enabled=True, interval_s=120)  # no timed export in time
        config = write_config(tmp_path, extra=extra)
        with running_daemon(config) as daemon:
            assert send(daemon, "echo", {"text": "hi"}) == {"text": "hi"}
            assert receiver.spans == []
            assert daemon.stop() == 0
        names = {s.name for s in receiver.spans}
    assert {"route echo", "invoke_agent echo"} <= names
