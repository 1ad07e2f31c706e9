"""agentd's Prometheus endpoint, scraped from a real daemon and parsed with prometheus_client:
a scripted workload (runs that succeed and fail, a dead letter, a policy denial, a tool call
from a worker) and the counts it must move; tool calls by effect, replicas by state, restarts,
backlog."""

from __future__ import annotations

import collections
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentd.gateway import ReplicaEndpoint, TokenHolder
from agentd.gateway._records import call_record
from agentd.gateway._relay import CallOutcome
from agentd.metrics import AgentdMetrics
from agentd.trace import DecisionRecord, build_record
from tests.harness import REPO, TEST_AGENTS, DaemonProcess, free_port, running_daemon, write_config

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def until(port: int, check: Callable[[Samples], bool], timeout_s: float = 10.0) -> Samples:
    """Scrape until `check` holds: counters move when records commit and samples are taken."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics never satisfied the check; last scrape: {samples}")
        time.sleep(0.1)


class Daemon:
    def __init__(self, process: DaemonProcess, port: int) -> None:
        self.process, self.port = process, port

    def ctl(self, *args: str) -> Any:
        out = self.process.agentctl("--json", *args, timeout_s=90)
        assert out.returncode == 0, f"{out.stderr}\n{self.process.log()}"
        return json.loads(out.stdout) if out.stdout.strip() else None


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    directory = tmp_path_factory.mktemp("metrics")
    agents = directory / "agents"
    agents.mkdir()
    (agents / "underwriter").symlink_to(TEST_AGENTS / "toolrunner")
    (agents / "echo").symlink_to(REPO / "agents" / "echo")
    (agents / "poison").symlink_to(TEST_AGENTS / "poison")
    port = free_port()
    config = write_config(
        directory,
        agents_dir=agents,
        policy="enforce",
        extra=(
            f'[tools]\ndir = "{REPO / "tools"}"\n'
            f"[metrics]\nport = {port}\nsample_interval_s = 0.2\n"
            "[autoscale]\nenabled = false\n"
        ),
    )
    env = {
        "AGENTD_LOAN_LEDGER": str(directory / "ledger.jsonl"),
        "POISON_FIX": str(directory / "never-fixed"),
    }
    with running_daemon(config, env=env) as d:
        yield Daemon(d, port)
        assert d.stop() == 0


def follow(daemon: Daemon, agent: str, count: int) -> subprocess.Popen[str]:
    """`agentctl trace --follow` for `agent`, once its subscription is in place."""
    process = daemon.process
    follower = subprocess.Popen(
        [sys.executable, "-m", "agentd.cli.agentctl", "--url", process.url]
        + ["--creds", str(process.admin_creds), "--json", "trace"]
        + ["--follow", "--agent", agent, "--count", str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stderr is not None
    ready = follower.stderr.readline()
    assert ready.startswith(f"following decisions of {agent}"), ready
    return follower


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)


@pytest.mark.integration
def test_a_scripted_workload_moves_every_count_it_should(daemon: Daemon) -> None:
    """Runs that succeed and fail, a dead letter, a policy denial and a tool call from a
    worker: every record of them (the daemon's and the replicas') reaches /metrics, exactly."""
    status = daemon.ctl("status")
    assert status["metrics_url"] == f"http://127.0.0.1:{daemon.port}/metrics"
    before = scrape(daemon.port)
    follower = follow(daemon, "poison", 9)
    try:
        for i in range(3):
            assert daemon.ctl("ask", "echo", json.dumps({"text": f"m{i}"}))["ok"]
        failed = daemon.ctl("send", "poison", json.dumps({"poison": True}), "--wait")
        assert failed["ok"] is False and "cannot digest poison" in failed["error"]
        args = {"applicant_id": "A-4711"}
        scored = daemon.ctl(
            "ask", "underwriter", json.dumps({"tool": "credit.score", "args": args})
        )
        assert scored["ok"], scored
        denied = {"tool": "sql.query", "args": {"query": "DELETE FROM loans"}}
        assert daemon.ctl("ask", "underwriter", json.dumps(denied))["output"]["error"]
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(5)
    # the live feed carries the replica's own records, not only the daemon's
    fed = [json.loads(line) for line in out.splitlines()]
    assert follower.returncode == 0, err
    kinds = collections.Counter(r["kind"] for r in fed)
    assert kinds == {
        "control.command": 1,  # agentctl send
        "message.routed": 1,
        "run.started": 3,
        "run.failed": 3,
        "message.dead_lettered": 1,
    }, kinds
    assert {r["source"] for r in fed if r["kind"].startswith("run.")} == {"agent:poison"}

    def settled(s: Samples) -> bool:
        return (
            delta(before, s, "agentd_runs_total", agent="poison", status="failed") >= 3
            and delta(before, s, "agentd_runs_total", agent="underwriter", status="ok") >= 2
            and delta(before, s, "agentd_runs_total", agent="echo", status="ok") >= 3
        )

    after = until(daemon.port, settled)
    d = functools.partial(delta, before, after)
    # runs: successes and failures, each attempt once
    assert d("agentd_runs_total", agent="echo", status="ok") == 3
    assert d("agentd_runs_total", agent="poison", status="failed") == 3
    assert d("agentd_runs_total", agent="poison", status="ok") == 0
    assert d("agentd_runs_total", agent="underwriter", status="ok") == 2
    assert d("agentd_run_duration_seconds_count", agent="echo") == 3
    assert d("agentd_run_duration_seconds_count", agent="poison") == 3
    assert d("agentd_run_duration_seconds_sum", agent="echo") > 0
    # the replicas' records are decisions like the daemon's
    assert d("agentd_decisions_total", kind="run.started", decision="-") == 8
    assert d("agentd_decisions_total", kind="run.finished", decision="ok") == 5
    assert d("agentd_decisions_total", kind="run.failed", decision="error") == 3
    # the dead letter: a record and a message outcome
    dead = {"kind": "message.dead_lettered", "decision": "dead_lettered"}
    assert d("agentd_decisions_total", **dead) == 1
    assert d("agentd_messages_total", agent="poison", outcome="dead_lettered") == 1
    assert d("agentd_messages_total", agent="poison", outcome="routed") == 1
    assert d("agentd_messages_total", agent="echo", outcome="routed") == 3
    # the tool call a worker made through the gateway, and the one policy refused
    executed = {"agent": "underwriter", "tool": "credit.score", "effect": "executed"}
    assert d("agentd_tool_calls_total", **executed) == 1
    assert d("agentd_tool_calls_total", **{**executed, "effect": "requested"}) == 1
    assert d("agentd_tool_call_duration_seconds_count", tool="credit.score", outcome="ok") == 1
    refused = {"agent": "underwriter", "tool": "sql.query", "effect": "denied"}
    assert d("agentd_tool_calls_total", **refused) == 1
    denials = {
        dict(labels).get("rule"): d(name, **dict(labels))
        for (name, labels) in after
        if name == "agentd_policy_denials_total" and dict(labels)["kind"] == "tool.denied"
    }
    assert sum(denials.values()) == 1 and None not in denials and "-" not in denials, denials
    # what was built, and no precomputed rate
    assert any(name == "agentd_build_info" and dict(labels)["version"] for name, labels in after)
    assert not any(name == "agentd_decisions_per_second" for name, _ in after)


@pytest.mark.integration
def test_backlog_replicas_and_restarts_follow_the_fleet(daemon: Daemon) -> None:
    samples = until(
        daemon.port, lambda s: value(s, "agentd_replicas", agent="echo", state="running") == 1
    )
    assert value(samples, "agentd_replicas_desired", agent="echo") == 1
    # a paused agent's inbox fills: the backlog gauge shows the waiting messages
    daemon.ctl("drain", "echo")
    for i in range(2):
        daemon.ctl("send", "echo", json.dumps({"text": f"queued {i}"}))
    until(
        daemon.port,
        lambda s: (
            (value(s, "agentd_inbox_backlog_messages", agent="echo", state="pending") or 0)
            + (value(s, "agentd_inbox_backlog_messages", agent="echo", state="unacked") or 0)
            >= 2
        ),
    )
    daemon.ctl("start", "echo")
    until(
        daemon.port,
        lambda s: (
            value(s, "agentd_inbox_backlog_messages", agent="echo", state="pending") == 0
            and value(s, "agentd_inbox_backlog_messages", agent="echo", state="unacked") == 0
        ),
        timeout_s=20,
    )
    # a killed replica is restarted by the supervisor, and counted
    before = value(scrape(daemon.port), "agentd_replica_restarts_total", agent="echo") or 0
    (echo,) = [a for a in daemon.ctl("ps") if a["agent"] == "echo"]
    os.kill(echo["replicas"][0]["pid"], signal.SIGKILL)
    until(
        daemon.port,
        lambda s: (
            (value(s, "agentd_replica_restarts_total", agent="echo") or 0) >= before + 1
            and value(s, "agentd_replicas", agent="echo", state="running") == 1
        ),
        timeout_s=20,
    )


def test_llm_calls_count_tokens_by_agent_and_pool() -> None:
    """The gateway's `llm.call` records, built by its own record builder, feed the token
    counters; the path from the recorder to `observe` is the one the daemon tests above exercise."""
    holder = TokenHolder("intake", "intake-0")
    endpoint = ReplicaEndpoint("main", "main-0", "http://127.0.0.1:9", "main", "org/model")

    def llm_call(**outcome: Any) -> DecisionRecord:
        done = CallOutcome(endpoint=endpoint, attempts=1, **outcome)
        fields = call_record(holder, b"{}", time.perf_counter(), {"pool": "main"}, outcome=done)
        return build_record("llm.call", fields)

    metrics = AgentdMetrics()
    metrics.observe(
        [
            llm_call(tokens_in=120, tokens_out=30),
            llm_call(decision="cancelled", tokens_in=5),  # a stream cut before its usage
        ]
    )
    samples = _exposition(metrics)
    assert (
        value(samples, "agentd_llm_tokens_total", agent="intake", pool="main", direction="input")
        == 125
    )
    assert (
        value(samples, "agentd_llm_tokens_total", agent="intake", pool="main", direction="output")
        == 30
    )
    assert value(samples, "agentd_llm_calls_total", agent="intake", pool="main") == 2


def _exposition(metrics: AgentdMetrics) -> Samples:
    from prometheus_client import generate_latest

    samples: Samples = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


@pytest.mark.integration
def test_a_port_in_use_does_not_stop_the_daemon(tmp_path: Any) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, extra=f"[metrics]\nport = {port}\n")
        with running_daemon(config) as d:
            status = d.agentctl("--json", "status")
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["metrics_url"] is None
            assert "metrics endpoint not started" in d.log()
            assert d.stop() == 0
