"""The registry of agentd's own metrics and how committed records and fleet samples feed it.

Every record the decision log stores, whoever wrote it (the daemon's components, or replicas
whose `run.*` and `x.*` records the trace ingest took), passes through `observe` once, after it
committed (`LogWriter.add_observer`): counters and histograms come from records, so what
/metrics says is what the log says. Gauges of state (replicas by state, inbox backlog) come from
a fleet sample taken every few seconds (`observe_fleet`). Rates are left to Prometheus
(`rate(agentd_decisions_total[1m])`): a counter survives scrape gaps and any window, a rate
precomputed over the sampler's interval does neither.

Names follow Prometheus conventions: `agentd_` prefix, `_total` on counters (added by the
client), base units (seconds). Label values are bounded (`_labels.BoundedLabels`).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info

import agentd
from agentd.trace import RECORD_KINDS, DecisionRecord, WireRecord

from ._fleet import FleetCollector
from ._labels import NONE, BoundedLabels
from ._view import RecordView, view

Record = DecisionRecord | RecordView
_EMPTY: Mapping[str, Any] = {}

__all__ = ["AgentdMetrics"]

RUN_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LLM_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
TTFT_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
TOOL_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
APPROVAL_SECONDS_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400)

# llm.call verdicts that refuse a call under policy or limits (the gateway's Refusal codes)
LLM_DENIALS = frozenset({"policy_denied", "rate_limited", "exceeds_limit"})
# approvals asked for and not answered yet: beyond this many the oldest are forgotten
MAX_PENDING_APPROVALS = 10_000


def _count(attributes: Mapping[str, Any], name: str) -> int | None:
    """An integer attribute (the gateway's `tokens_in` / `tokens_out`); None if absent."""
    value = attributes.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _seconds(attributes: Mapping[str, Any], name: str) -> float | None:
    value = attributes.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def sandbox_rule(reason: str | None) -> str | None:
    """Which sandbox boundary a failure's reason shows was hit, or None if it shows none.

    The kernel answers a denied attempt with EACCES (files, TCP connect) or EPERM (signals,
    other domains' sockets); Python raises PermissionError with that errno. A path in the
    message means a file was refused.
    """
    if not reason:
        return None
    if "cannot enter the sandbox" in reason:
        return "enter"
    if "PermissionError" not in reason and "[Errno 13]" not in reason:
        return None
    if "[Errno 13] Permission denied: '" in reason:
        return "filesystem"
    if "[Errno 13]" in reason:
        return "network"
    if "[Errno 1]" in reason:
        return "process"
    return "other"


class AgentdMetrics:
    """agentd's metrics in a registry of their own (not the process-global default one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.labels = BoundedLabels()
        r = self.registry

        def counter(name: str, doc: str, labels: Sequence[str]) -> Counter:
            return Counter(name, doc, list(labels), registry=r)

        def histogram(
            name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
        ) -> Histogram:
            return Histogram(name, doc, list(labels), buckets=buckets, registry=r)

        self.decisions = counter(
            "agentd_decisions",
            "Decision records committed to the log (the daemon's and replicas'), by kind and"
            " verdict",
            ["kind", "decision"],
        )
        self.tool_calls = counter(
            "agentd_tool_calls",
            "Tool-call steps by effect (requested, denied, approved, executed, failed...)",
            ["agent", "tool", "effect"],
        )
        self.tool_seconds = histogram(
            "agentd_tool_call_duration_seconds",
            "Tool calls the gateway ran, from start to result, by tool and outcome (ok, failed)",
            ["tool", "outcome"],
            TOOL_SECONDS_BUCKETS,
        )
        self.approval_seconds = histogram(
            "agentd_approval_wait_seconds",
            "How long tool calls waited for an operator's answer, by tool and outcome",
            ["tool", "outcome"],
            APPROVAL_SECONDS_BUCKETS,
        )
        self.llm_calls = counter(
            "agentd_llm_calls", "LLM calls through the gateway", ["agent", "pool"]
        )
        self.llm_tokens = counter(
            "agentd_llm_tokens",
            "LLM tokens by agent, model pool and direction (input, output)",
            ["agent", "pool", "direction"],
        )
        self.llm_seconds = histogram(
            "agentd_llm_request_duration_seconds",
            "LLM calls the gateway relayed, from request to the last byte, by model pool",
            ["pool"],
            LLM_SECONDS_BUCKETS,
        )
        self.llm_ttft = histogram(
            "agentd_llm_time_to_first_token_seconds",
            "Streamed LLM calls: from the request to the first bytes of the stream, by pool",
            ["pool"],
            TTFT_SECONDS_BUCKETS,
        )
        self.policy_denials = counter(
            "agentd_policy_denials",
            "Requests refused by policy or limits (tool, message, LLM, control, spawn), by"
            " record kind, verdict and the rule that decided",
            ["kind", "decision", "rule"],
        )
        self.sandbox_denials = counter(
            "agentd_sandbox_denials",
            "Runs and isolated tool calls that failed on a sandbox refusal, by boundary"
            " (filesystem, network, process, enter)",
            ["agent", "tool", "rule"],
        )
        self.runs = counter(
            "agentd_runs",
            "Run attempts ended, by agent and outcome (ok, failed, cancelled)",
            ["agent", "status"],
        )
        self.run_seconds = histogram(
            "agentd_run_duration_seconds",
            "Run attempts that ended ok or failed, from start to end, by agent",
            ["agent"],
            RUN_SECONDS_BUCKETS,
        )
        self.restarts = counter(
            "agentd_replica_restarts", "Replica restarts by the supervisor", ["agent"]
        )
        self.messages = counter(
            "agentd_messages",
            "Messages between agents by outcome (routed, refused, dead_lettered)",
            ["agent", "outcome"],
        )
        self.build = Info("agentd_build", "The agentd build that serves these metrics", registry=r)
        self.build.info({"version": agentd.__version__, "python": platform.python_version()})
        self._fleet = FleetCollector()
        r.register(self._fleet)
        # labels() validates and locks on every call; observe() runs for every committed
        # record on the event loop, so labelled children are looked up once and kept
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._approvals: dict[str, tuple[float, str]] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe(self, records: Iterable[DecisionRecord | WireRecord]) -> None:
        """Count committed records (each once, after commit; duplicates left out)."""
        bound = self.labels
        for record in records:
            # the daemon's records are read as they are; a replica's from its text
            rec = record if isinstance(record, DecisionRecord) else view(record)
            kind = rec.kind
            if kind in RECORD_KINDS:
                labels = (kind, bound("decision", rec.decision))
            else:  # extensions (`x.*`) name themselves: bounded apart from the daemon's kinds
                labels = (bound("x_kind", kind), bound("x_decision", rec.decision))
            self._child(self.decisions, *labels).inc()
            family = kind.split(".", 1)[0]
            if family == "tool":
                self._observe_tool(rec)
            elif family == "run":
                self._observe_run(rec)
            elif kind == "llm.call":
                self._observe_llm(rec)
            elif family == "message":
                self._child(self.messages, bound("agent", rec.agent), kind[8:]).inc()
                if kind == "message.refused":
                    self._deny(rec)
            elif kind == "agent.restarted":
                self._child(self.restarts, bound("agent", rec.agent)).inc()
            elif (kind, rec.decision) in (
                ("control.command", "denied"),
                ("agent.spawned", "refused"),
            ):
                self._deny(rec)

    def _deny(self, rec: Record) -> None:
        bound = self.labels
        labels = (bound("kind", rec.kind), bound("decision", rec.decision), bound("rule", rec.rule))
        self._child(self.policy_denials, *labels).inc()

    def _observe_tool(self, rec: Record) -> None:
        bound, attributes = self.labels, rec.attributes or _EMPTY
        tool = bound("tool", attributes.get("tool"))
        effect = rec.kind[5:]
        self._child(self.tool_calls, bound("agent", rec.agent), tool, effect).inc()
        if effect == "denied":
            self._deny(rec)
        elif effect in ("executed", "failed"):
            seconds = _seconds(attributes, "duration_s")
            if seconds is not None and rec.decision != "replayed":
                outcome = "ok" if effect == "executed" else "failed"
                self._child(self.tool_seconds, tool, outcome).observe(seconds)
            where = sandbox_rule(rec.reason) if effect == "failed" else None
            if where is not None and attributes.get("sandbox") is not None:
                self._child(self.sandbox_denials, bound("agent", rec.agent), tool, where).inc()
        elif effect == "approval_requested":
            approval = attributes.get("approval_id")
            if isinstance(approval, str):
                if len(self._approvals) >= MAX_PENDING_APPROVALS:
                    del self._approvals[next(iter(self._approvals))]
                self._approvals[approval] = (rec.ts, tool)
        elif effect in ("approved", "rejected"):
            asked = self._approvals.pop(str(attributes.get("approval_id")), None)
            if asked is not None:
                outcome = bound("decision", rec.decision)
                waited = max(rec.ts - asked[0], 0.0)
                self._child(self.approval_seconds, asked[1], outcome).observe(waited)

    def _observe_run(self, rec: Record) -> None:
        if rec.kind == "run.started":
            return
        agent = self.labels("agent", rec.agent)
        if rec.kind == "run.finished":
            status = "ok"
        elif rec.decision == "cancelled":
            status = "cancelled"
        else:
            status = "failed"
            where = sandbox_rule(rec.reason)
            if where is not None:
                self._child(self.sandbox_denials, agent, NONE, where).inc()
        self._child(self.runs, agent, status).inc()
        seconds = _seconds(rec.attributes or _EMPTY, "duration_s")
        if seconds is not None and status != "cancelled":
            self._child(self.run_seconds, agent).observe(seconds)

    def _observe_llm(self, rec: Record) -> None:
        bound, attributes = self.labels, rec.attributes or _EMPTY
        agent = bound("agent", rec.agent)
        pool = bound("pool", attributes.get("pool"))
        self._child(self.llm_calls, agent, pool).inc()
        # the gateway's llm.call records (agentd/gateway/_records.py) name them so
        tokens_in = _count(attributes, "tokens_in")
        tokens_out = _count(attributes, "tokens_out")
        if tokens_in:
            self._child(self.llm_tokens, agent, pool, "input").inc(tokens_in)
        if tokens_out:
            self._child(self.llm_tokens, agent, pool, "output").inc(tokens_out)
        if rec.decision in LLM_DENIALS:
            self._deny(rec)
            return
        if "attempts" in attributes:  # relayed upstream (a refusal never is)
            latency = _seconds(attributes, "latency_s")
            if latency is not None:
                self._child(self.llm_seconds, pool).observe(latency)
            ttft = _seconds(attributes, "ttft_s")
            if ttft is not None:
                self._child(self.llm_ttft, pool).observe(ttft)

    def observe_fleet(self, agents: Sequence[Mapping[str, Any]]) -> None:
        """Take a fleet sample: `agentctl ps` rows (agent, desired, backlog, replicas)."""
        self._fleet.update(agents)
