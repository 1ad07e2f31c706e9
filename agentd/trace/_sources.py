"""Who may write which records: the identity a record arrived from, and the kinds it owns.

The daemon writes its own records (`source` = `daemon`): routing, policy, approvals, tool
gateway steps, LLM gateway calls, lifecycle, control commands. A replica (or a registered
external agent) writes only on its own trace subject `<prefix>.trace.<name>`, and only what
it owns: the steps of its runs (`run.started`, `run.finished`, `run.failed`, published by the
worker itself) and extension records its graph makes (`x.<name>`, `AgentContext.record`). That
is everything `agentd.worker` publishes (its `TracePublisher` carries the run records and the
graph's `ctx.record`); every other kind names a decision that only the daemon takes, so an agent
that publishes one is forging it. Each ingested record gets `source` = `agent:<name>`: a reader
can always tell a record an agent wrote from one the daemon wrote.

Times: a record's `ts` is the publisher's clock. It must lie within `max_clock_skew_s` of the
time the trace stream stored the message (the NATS server's clock, not the daemon's: a record
that waited in the stream while the daemon was down is still accepted when it comes back).
"""

from __future__ import annotations

__all__ = [
    "AGENT_KINDS",
    "DAEMON_SOURCE",
    "agent_may_write",
    "agent_source",
    "skew_problem",
]

DAEMON_SOURCE = "daemon"

AGENT_KINDS: frozenset[str] = frozenset({"run.started", "run.finished", "run.failed"})
"""The record kinds of `RECORD_KINDS` an agent may publish; `x.*` extensions come on top."""


def agent_source(agent: str) -> str:
    """The `source` of records ingested from agent `agent`'s trace subject."""
    return f"agent:{agent}"


def agent_may_write(kind: str) -> bool:
    """Whether an agent's own trace subject may carry a record of this (valid) kind."""
    return kind in AGENT_KINDS or kind.startswith("x.")


def skew_problem(ts: float, stored_at: float, max_skew_s: float) -> str | None:
    """Why `ts` is refused for a message the stream stored at `stored_at`, or None."""
    if abs(ts - stored_at) <= max_skew_s:
        return None
    direction = "before" if ts < stored_at else "after"
    return (
        f"the record's time {ts:.3f} is {abs(ts - stored_at):.0f}s {direction} the time the"
        f" trace stream stored it ({stored_at:.3f}); more than [trace].max_clock_skew_s ="
        f" {max_skew_s:g}: a replica may not date its records"
    )
