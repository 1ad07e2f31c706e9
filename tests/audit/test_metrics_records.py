"""agentd's metrics from records, unit by unit: each record is built the way its producer builds
it (the worker's publisher checked by the ingest, the gateways' record builders, the recorder's
`build_record`), then counted by `AgentdMetrics.observe`. The daemon-level test in
tests/test_metrics.py scrapes the same metrics after a real workload."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import agentd
from agentd.gateway import ReplicaEndpoint, TokenHolder
from agentd.gateway._records import Refusal, call_record
from agentd.gateway._relay import CallOutcome
from agentd.metrics import AgentdMetrics, BoundedLabels, sandbox_rule
from agentd.trace import DecisionRecord, WireRecord, build_record, parse_published


def published(agent: str, kind: str, **fields: Any) -> WireRecord | DecisionRecord:
    """A record as a replica publishes it and the daemon's ingest accepts it."""
    fields.setdefault("agent", agent)
    body = build_record(kind, fields).body_json().encode()
    return parse_published(agent, body)


def daemon(kind: str, **fields: Any) -> DecisionRecord:
    return build_record(kind, {"source": "daemon", **fields})


def get(metrics: AgentdMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_runs_count_every_outcome_from_the_replicas_records() -> None:
    metrics = AgentdMetrics()
    records = [
        published("poison", "run.started", run_id="r1"),
        published("poison", "run.failed", run_id="r1", decision="error", duration_s=0.2),
        published("poison", "run.failed", run_id="r1", decision="error", duration_s=0.4),
        published("poison", "run.failed", run_id="r2", decision="cancelled", duration_s=9.0),
        published("poison", "run.finished", run_id="r3", decision="ok", duration_s=0.1),
    ]
    assert isinstance(records[0], WireRecord)  # the ingest's fast path, read from its text
    metrics.observe(records)
    assert get(metrics, "agentd_runs_total", agent="poison", status="failed") == 2
    assert get(metrics, "agentd_runs_total", agent="poison", status="cancelled") == 1
    assert get(metrics, "agentd_runs_total", agent="poison", status="ok") == 1
    # a drained run's time says nothing about how long runs take
    assert get(metrics, "agentd_run_duration_seconds_count", agent="poison") == 3
    assert get(metrics, "agentd_run_duration_seconds_sum", agent="poison") == pytest.approx(0.7)
    assert get(metrics, "agentd_decisions_total", kind="run.failed", decision="error") == 2
    assert get(metrics, "agentd_decisions_total", kind="run.started", decision="-") == 1


def test_llm_duration_and_time_to_first_token_by_pool_and_refusals_by_rule() -> None:
    holder = TokenHolder("intake", "intake-0")
    endpoint = ReplicaEndpoint("main", "main-0", "http://127.0.0.1:9", "main", "org/model")

    def relayed(seconds: float, ttft_s: float | None) -> DecisionRecord:
        outcome = CallOutcome(endpoint=endpoint, attempts=1, tokens_in=10, ttft_s=ttft_s)
        started = time.perf_counter() - seconds
        fields = call_record(holder, b"{}", started, {"pool": "main"}, outcome=outcome)
        return build_record("llm.call", fields)

    refusal = Refusal(429, "rate_limit_error", "slow down", code="rate_limited", rule="tpm 100")
    refused = build_record(
        "llm.call",
        call_record(holder, b"{}", time.perf_counter(), {"pool": "main"}, refusal=refusal),
    )
    metrics = AgentdMetrics()
    metrics.observe([relayed(1.5, 0.3), relayed(0.2, None), refused])
    assert get(metrics, "agentd_llm_request_duration_seconds_count", pool="main") == 2
    assert get(metrics, "agentd_llm_request_duration_seconds_bucket", pool="main", le="1.0") == 1
    assert get(metrics, "agentd_llm_time_to_first_token_seconds_count", pool="main") == 1
    assert (
        get(metrics, "agentd_llm_time_to_first_token_seconds_bucket", pool="main", le="0.25") == 0
    )
    assert get(metrics, "agentd_llm_calls_total", agent="intake", pool="main") == 3
    denial = {"kind": "llm.call", "decision": "rate_limited", "rule": "tpm 100"}
    assert get(metrics, "agentd_policy_denials_total", **denial) == 1


def test_tool_duration_approval_wait_and_denials_by_rule() -> None:
    call = {"agent": "underwriter", "tool": "loan.approve", "call_id": "c1"}
    metrics = AgentdMetrics()
    metrics.observe(
        [
            daemon("tool.executed", decision="ok", duration_s=0.03, **call),
            daemon("tool.executed", decision="replayed", **call),  # ran before: no duration
            daemon("tool.failed", decision="error", reason="boom", duration_s=2.0, **call),
            daemon("tool.approval_requested", ts=1000.0, approval_id="ap-1", **call),
            daemon("tool.approved", ts=1042.0, decision="approve", approval_id="ap-1", **call),
            daemon("tool.approval_requested", ts=2000.0, approval_id="ap-2", **call),
            daemon("tool.rejected", ts=2600.0, decision="timeout", approval_id="ap-2", **call),
            daemon("tool.denied", decision="policy_denied", rule="p, x, tool:y, call", **call),
            daemon("message.refused", agent="intake", decision="refused", rule="deny-by-default"),
            daemon("control.command", operator="carol", decision="denied", rule="logs deny"),
            daemon("control.command", operator="alice", decision="status", rule="ok"),
            daemon("agent.spawned", agent="intake", decision="refused", rule="no spawn"),
        ]
    )
    tool = {"tool": "loan.approve"}
    assert get(metrics, "agentd_tool_call_duration_seconds_count", outcome="ok", **tool) == 1
    assert get(metrics, "agentd_tool_call_duration_seconds_count", outcome="failed", **tool) == 1
    approved = {"outcome": "approve", **tool}
    assert get(metrics, "agentd_approval_wait_seconds_sum", **approved) == pytest.approx(42)
    timed_out = {"outcome": "timeout", **tool}
    assert get(metrics, "agentd_approval_wait_seconds_sum", **timed_out) == pytest.approx(600)
    denials = {
        ("tool.denied", "policy_denied", "p, x, tool:y, call"),
        ("message.refused", "refused", "deny-by-default"),
        ("control.command", "denied", "logs deny"),
        ("agent.spawned", "refused", "no spawn"),
    }
    for kind, decision, rule in denials:
        labels = {"kind": kind, "decision": decision, "rule": rule}
        assert get(metrics, "agentd_policy_denials_total", **labels) == 1, labels
    assert (
        get(
            metrics,
            "agentd_policy_denials_total",
            kind="control.command",
            decision="status",
            rule="ok",
        )
        is None
    )


def test_sandbox_denials_by_boundary() -> None:
    assert sandbox_rule("PermissionError: [Errno 13] Permission denied: '/etc/agentd'") == (
        "filesystem"
    )
    assert sandbox_rule("PermissionError: [Errno 13] Permission denied") == "network"
    assert sandbox_rule("PermissionError: [Errno 1] Operation not permitted") == "process"
    assert sandbox_rule("agentd.sandbox: cannot enter the sandbox (x); mode enforce") == "enter"
    assert sandbox_rule("ValueError: cannot digest poison") is None
    leak = "hostile.leak failed: PermissionError: [Errno 13] Permission denied: '/x/daemon.creds'"
    metrics = AgentdMetrics()
    metrics.observe(
        [
            daemon("tool.failed", agent="a", tool="hostile.leak", reason=leak, sandbox="sha256:1"),
            # not isolated: a tool's own PermissionError is not the sandbox's
            daemon("tool.failed", agent="a", tool="local.tool", reason=leak),
            published("b", "run.failed", decision="error", reason="PermissionError: [Errno 1] x"),
        ]
    )
    assert (
        get(
            metrics,
            "agentd_sandbox_denials_total",
            agent="a",
            tool="hostile.leak",
            rule="filesystem",
        )
        == 1
    )
    assert (
        get(
            metrics, "agentd_sandbox_denials_total", agent="a", tool="local.tool", rule="filesystem"
        )
        is None
    )
    assert get(metrics, "agentd_sandbox_denials_total", agent="b", tool="-", rule="process") == 1


def test_build_info_names_the_version() -> None:
    text = generate_latest(AgentdMetrics().registry).decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    (sample,) = [s for s in samples if s.name == "agentd_build_info"]
    assert sample.value == 1
    assert sample.labels["version"] == agentd.__version__ and sample.labels["python"]


def test_label_values_from_outside_are_bounded() -> None:
    """An agent inventing record kinds or tool names cannot mint a series per value."""
    metrics = AgentdMetrics()
    metrics.labels = BoundedLabels({"x_kind": 3, "tool": 2})
    metrics.observe(published("rogue", f"x.made.up{i}") for i in range(50))
    metrics.observe(
        daemon("tool.denied", agent="rogue", tool=f"no.such{i}", decision="unknown_tool")
        for i in range(50)
    )
    families = {
        f.name: f
        for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
    }
    kinds = {s.labels["kind"] for s in families["agentd_decisions"].samples}
    # three invented kinds kept, the rest counted together; the daemon's own kind unharmed
    assert kinds == {"x.made.up0", "x.made.up1", "x.made.up2", "_other", "tool.denied"}
    other = {"kind": "_other", "decision": "-"}
    assert get(metrics, "agentd_decisions_total", **other) == 47
    tools = {s.labels["tool"] for s in families["agentd_tool_calls"].samples}
    assert tools == {"no.such0", "no.such1", "_other"}
    long_name = BoundedLabels()("agent", "a" * 1000)
    assert len(long_name) == 128
