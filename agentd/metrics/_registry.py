"""The registry of agentd's own metrics and how records, runs and fleet samples feed it.

Counters come from events as they happen: every committed decision record (`observe`), every
finished run (`observe_run`). Gauges of state (replicas by state, inbox backlog, decisions per
second) come from a sample of the fleet taken every few seconds (`observe_fleet`) and are served
from that snapshot, so a scrape never waits for the daemon's event loop and never sees a
half-updated set of labels.

Names follow Prometheus conventions: `agentd_` prefix, `_total` on counters (added by the
client), base units (seconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentd.trace import DecisionRecord

__all__ = ["AgentdMetrics"]

RUN_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_NONE = "-"


def _count(attributes: Mapping[str, Any], name: str) -> int | None:
    """An integer attribute (the gateway's `tokens_in` / `tokens_out`); None if absent."""
    value = attributes.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _FleetCollector(Collector):
    """Gauges served from the latest fleet sample (swapped in whole, under a lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replicas: dict[tuple[str, str], int] = {}
        self._backlog: dict[tuple[str, str], int] = {}
        self._agents: dict[str, int] = {}
        self._decisions_per_s = 0.0

    def update(
        self,
        replicas: dict[tuple[str, str], int],
        backlog: dict[tuple[str, str], int],
        desired: dict[str, int],
        decisions_per_s: float | None,
    ) -> None:
        with self._lock:
            self._replicas, self._backlog, self._agents = replicas, backlog, desired
            if decisions_per_s is not None:
                self._decisions_per_s = decisions_per_s

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            replicas, backlog = dict(self._replicas), dict(self._backlog)
            desired, rate = dict(self._agents), self._decisions_per_s
        family = GaugeMetricFamily(
            "agentd_replicas", "Agent replicas by state", labels=["agent", "state"]
        )
        for (agent, state), count in sorted(replicas.items()):
            family.add_metric([agent, state], count)
        yield family
        family = GaugeMetricFamily(
            "agentd_replicas_desired", "Replicas each agent should run", labels=["agent"]
        )
        for agent, count in sorted(desired.items()):
            family.add_metric([agent], count)
        yield family
        family = GaugeMetricFamily(
            "agentd_inbox_backlog_messages",
            "Messages in an agent's inbox: waiting (pending) or being worked on (unacked)",
            labels=["agent", "state"],
        )
        for (agent, state), count in sorted(backlog.items()):
            family.add_metric([agent, state], count)
        yield family
        yield GaugeMetricFamily(
            "agentd_decisions_per_second",
            "Decision records committed per second over the last sample interval",
            value=rate,
        )


class AgentdMetrics:
    """agentd's metrics in a registry of their own (not the process-global default one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "agentd_decisions",
            "Decision records committed to the log, by kind and verdict",
            ["kind", "decision"],
            registry=r,
        )
        self.tool_calls = Counter(
            "agentd_tool_calls",
            "Tool-call steps by effect (requested, denied, approved, executed, failed...)",
            ["agent", "tool", "effect"],
            registry=r,
        )
        self.llm_calls = Counter(
            "agentd_llm_calls", "LLM calls through the gateway", ["agent", "pool"], registry=r
        )
        self.llm_tokens = Counter(
            "agentd_llm_tokens",
            "LLM tokens by agent, model pool and direction (input, output)",
            ["agent", "pool", "direction"],
            registry=r,
        )
        self.runs = Counter(
            "agentd_runs", "Runs finished, by agent and outcome", ["agent", "status"], registry=r
        )
        self.run_seconds = Histogram(
            "agentd_run_duration_seconds",
            "Run latency: from a replica receiving the message to the run's end",
            ["agent"],
            buckets=RUN_SECONDS_BUCKETS,
            registry=r,
        )
        self.restarts = Counter(
            "agentd_replica_restarts", "Replica restarts by the supervisor", ["agent"], registry=r
        )
        self.messages = Counter(
            "agentd_messages",
            "Messages between agents by outcome (routed, refused, dead_lettered)",
            ["agent", "outcome"],
            registry=r,
        )
        self._fleet = _FleetCollector()
        r.register(self._fleet)
        self._committed = 0
        self._last_sample: tuple[float, int] | None = None
        # labels() validates and locks on every call; the recorder calls observe() for every
        # record on the event loop, so labelled children are looked up once and kept
        self._children: dict[tuple[int, tuple[str, ...]], Counter] = {}

    def _child(self, counter: Counter, *labels: str) -> Counter:
        key = (id(counter), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        return child

    def observe(self, records: Iterable[DecisionRecord]) -> None:
        """Count committed records (call once per record, after commit)."""
        for record in records:
            self._committed += 1
            self._child(self.decisions, record.kind, record.decision or _NONE).inc()
            kind = record.kind
            attributes = record.attributes or {}
            if kind.startswith("tool."):
                tool = attributes.get("tool")
                self._child(
                    self.tool_calls,
                    record.agent or _NONE,
                    tool if isinstance(tool, str) else _NONE,
                    kind[5:],
                ).inc()
            elif kind == "llm.call":
                self._observe_llm(record, attributes)
            elif kind.startswith("message."):
                self._child(self.messages, record.agent or _NONE, kind[8:]).inc()
            elif kind == "agent.restarted":
                self._child(self.restarts, record.agent or _NONE).inc()

    def _observe_llm(self, record: DecisionRecord, attributes: Mapping[str, Any]) -> None:
        pool = attributes.get("pool")
        agent = record.agent or _NONE
        pool_label = pool if isinstance(pool, str) else _NONE
        self._child(self.llm_calls, agent, pool_label).inc()
        # the gateway's llm.call records (agentd/gateway/_records.py) name them so
        tokens_in = _count(attributes, "tokens_in")
        tokens_out = _count(attributes, "tokens_out")
        if tokens_in:
            self._child(self.llm_tokens, agent, pool_label, "input").inc(tokens_in)
        if tokens_out:
            self._child(self.llm_tokens, agent, pool_label, "output").inc(tokens_out)

    def observe_run(self, agent: str, *, ok: bool, duration_s: float | None) -> None:
        """Count one finished run (once per message: the run ledger's first completion)."""
        self.runs.labels(agent, "ok" if ok else "failed").inc()
        if duration_s is not None and duration_s >= 0:
            self.run_seconds.labels(agent).observe(duration_s)

    def observe_fleet(
        self, agents: Sequence[Mapping[str, Any]], *, now: float | None = None
    ) -> None:
        """Take a fleet sample: `agentctl ps` rows (agent, desired, backlog, replicas)."""
        replicas: dict[tuple[str, str], int] = {}
        backlog: dict[tuple[str, str], int] = {}
        desired: dict[str, int] = {}
        for row in agents:
            name = str(row["agent"])
            desired[name] = int(row.get("desired") or 0)
            for state in ("pending", "unacked"):
                backlog[(name, state)] = int((row.get("backlog") or {}).get(state, 0))
            for replica in row.get("replicas", ()):
                key = (name, str(replica["state"]))
                replicas[key] = replicas.get(key, 0) + 1
        at = time.monotonic() if now is None else now
        rate = None
        if self._last_sample is not None and at > self._last_sample[0]:
            rate = (self._committed - self._last_sample[1]) / (at - self._last_sample[0])
        self._last_sample = (at, self._committed)
        self._fleet.update(replicas, backlog, desired, rate)
