"""The daemon's recorder: every decision becomes a record in the durable decision log.

Components call `record(kind, **fields)` from the event loop; records are buffered and handed in
batches to the `LogWriter`, the log's only writer, which the trace ingest shares (SQLite must not
block the loop, and one file has one writer). The log is closed with a final signed checkpoint on
shutdown. Observers (metrics, the live decision feed) are the writer's: they see every record the
log stores, the daemon's and those the ingest took from replicas alike (`LogWriter.add_observer`).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from anyio.abc import TaskStatus

from agentd.trace import (
    DAEMON_SOURCE,
    CommitObserver,
    DecisionLogDamaged,
    DecisionRecord,
    LogWriter,
    build_record,
)

__all__ = ["Recorder"]

log = logging.getLogger("agentd.trace")

FLUSH_EVERY_S = 0.05


class Recorder:
    def __init__(self, writer: LogWriter) -> None:
        self.writer = writer
        self.log = writer.log
        self._pending: list[DecisionRecord] = []
        self._wake = anyio.Event()
        self._stopped = False

    def add_observer(self, observer: CommitObserver) -> None:
        """Call `observer` with every record the log stores, whoever wrote it, once
        committed (`LogWriter.add_observer`)."""
        self.writer.add_observer(observer)

    def record(self, kind: str, **fields: Any) -> None:
        """Queue one decision. Unknown fields go to `attributes`; never raises.

        Its `source` is `daemon`: every record the daemon's components make is the daemon's.
        """
        fields.setdefault("source", DAEMON_SOURCE)
        try:  # the same construction as workers' records (TracePublisher.record)
            self._pending.append(build_record(kind, fields))
        except ValueError as exc:
            log.error("dropping a malformed decision record of kind %s: %s", kind, exc)
            return
        if len(self._pending) >= 100:
            self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while not self._stopped:
            with anyio.move_on_after(FLUSH_EVERY_S):
                await self._wake.wait()
            self._wake = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await self.writer.append(batch)
        except DecisionLogDamaged as exc:  # the log refuses to be extended: said once, plainly
            log.error("%d decision records not written: %s", len(batch), exc)
            return
        except Exception:
            log.exception("writing %d decision records failed", len(batch))

    async def close(self) -> None:
        """Write what is pending, sign a final checkpoint and close the log (repeatable)."""
        self._stopped = True
        self._wake.set()
        with anyio.CancelScope(shield=True):
            await self.flush()
            await self.writer.close()
