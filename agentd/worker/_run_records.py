"""A replica's decision records about its own runs, and the lineage they all carry.

Each run gets `run.started` (message id, sender, delivery attempt), then `run.finished` or
`run.failed` (decision "error" with the error as reason, or "cancelled" when the replica
drained), with `duration_s`. Records are published by the replica's `TracePublisher`; their ids
are kept on the run (`RunInfo.record_ids`, with those the graph made through `ctx.record`) so
the worker can wait until the stream holds them before it acks the run's message.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from agentd.config import LoadedAgent
from agentd.telemetry import current_span_ids
from agentd.trace import Lineage, TracePublisher
from agentd.worker._context import RunInfo

__all__ = ["RunRecords", "agent_lineage"]

log = logging.getLogger("agentd.worker")

# how long an ack waits for the run's records to be stored (the bus is down beyond that)
STORED_WAIT_S = 5.0


def agent_lineage(agent: LoadedAgent) -> Lineage:
    """What a replica runs, for every record it publishes: the agent's version (spec and
    graph folder), and the spec and the graph module each on its own."""
    return Lineage(
        agent_version=agent.version,
        spec_hash=_file_hash(agent.spec_path),
        graph_hash=_file_hash(agent.graph_file),
    )


def _file_hash(path: Path) -> str | None:
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class RunRecords:
    """Records the steps of runs through `publisher` (none: records nothing)."""

    def __init__(self, publisher: TracePublisher | None) -> None:
        self.publisher = publisher

    def started(self, run: RunInfo, *, message_id: str, sender: str, attempt: int) -> float:
        """Record the start; returns the start time to pass to `finished` / `failed`."""
        inputs = {"message_id": message_id, "sender": sender, "attempt": attempt}
        self._record("run.started", run, None, inputs=inputs)
        return time.monotonic()

    def finished(self, run: RunInfo, started: float, *, resumed: bool = False) -> None:
        """The run ended; `resumed`: it went on from its own last checkpoint (a retry or a
        redelivery, agentd/worker/_resume.py) instead of starting from its input."""
        extra = {"resumed_from_checkpoint": True} if resumed else {}
        self._record("run.finished", run, started, decision="ok", **extra)

    def failed(self, run: RunInfo, started: float, *, error: str | None) -> None:
        """A failed attempt (`error`), or a run cut short by draining (`error` None)."""
        if error is None:
            self._record("run.failed", run, started, decision="cancelled", reason="drained")
        else:
            self._record("run.failed", run, started, decision="error", reason=error)

    async def stored(self, run: RunInfo) -> None:
        """Wait until the stream holds every record of `run` (before its message is acked)."""
        if self.publisher is None or not run.record_ids:
            return
        if not await self.publisher.wait_published(run.record_ids, timeout_s=STORED_WAIT_S):
            log.warning("run %s: its decision records are not stored yet", run.run_id)

    def _record(self, kind: str, run: RunInfo, started: float | None, **fields: Any) -> None:
        if self.publisher is None:
            return
        # called inside the run's invoke_agent span: the records carry its ids
        fields.update(current_span_ids())
        if started is not None:
            fields["duration_s"] = round(time.monotonic() - started, 6)
        record = self.publisher.record(
            kind, run_id=run.run_id, conversation_id=run.conversation_id, **fields
        )
        if record is not None:
            run.record_ids.append(record.id)
