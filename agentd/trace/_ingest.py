"""The daemon's trace ingest: decision records from AGENTD_TRACE into the decision log.

One durable pull consumer reads `<prefix>.trace.*` in batches of `[trace].ingest_batch`
messages; a message holds one record, or several, one per line, when it has the
`Agentd-Records` header (see `TracePublisher`). Each record is checked on its own
(`parse_published`): a malformed record, one that names another agent than its subject, one of
a kind only the daemon writes, or one dated more than `[trace].max_clock_skew_s` from the time
the stream stored it (see `_sources`), is refused with a log line naming the subject, the stream
sequence (and line) and the reason, noted in the log as a `trace.rejected` record that keeps only
the body's digest, and never holds up the rest of its message or batch; every accepted record is
stored with `source` = `agent:<name>`; a message none of whose records can be stored is
terminated (never delivered again). The accepted records
of a batch go to the `LogWriter` as one append, and the batch's messages are acked only after
that append committed. If the daemon dies in between, JetStream delivers them again after
`ingest_ack_wait_s`, and the log drops every id it already holds: each record is stored exactly
once. If the write fails, nothing is acked, so the records come back after `ingest_ack_wait_s`.

Fetching and writing overlap: while the writer thread commits one batch, the event loop fetches
and checks the next (at most one batch waits between them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import nats.errors
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentd.bus import Subjects, ensure_trace_consumer, ensure_trace_stream, jetstream
from agentd.config import TraceConfig

from ._log_writer import LogWriter
from ._publisher import RECORDS_HEADER
from ._pull import BatchPuller
from ._record import DecisionRecord
from ._wire import RecordRejected, WireRecord, body_digest, parse_published

__all__ = ["TraceIngest"]

log = logging.getLogger("agentd.trace")

# how long one pull waits for its batch to fill: the latency of a trickle of records, and a
# bound on how long shutdown waits for the pull in hand
FETCH_WAIT_S = 0.05

RecordFn = Callable[..., Any]
"""`Recorder.record`: how a refusal becomes a `trace.rejected` record."""


@dataclass(slots=True)
class _Batch:
    records: list[WireRecord | DecisionRecord]
    messages: list[Msg]


@dataclass(slots=True)
class _Checked:
    batch: _Batch
    refusals: list[tuple[Msg, str, bytes, str, int | None]]
    unusable: list[Msg]
    """Messages none of whose records can be stored: terminated."""


def _stored_at(msg: Msg) -> float | None:
    """When the stream stored `msg` (the server's clock), from its ack subject."""
    if not msg.reply:
        return None
    try:
        return msg.metadata.timestamp.timestamp()
    except (nats.errors.Error, ValueError, IndexError):
        return None


class TraceIngest:
    """Moves records from the trace stream into the log; a service (`run`, `shutdown`)."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        writer: LogWriter,
        config: TraceConfig,
        *,
        on_rejected: RecordFn | None = None,
        stream_replicas: int = 1,
    ) -> None:
        self._nc = nc
        self._stream_replicas = stream_replicas
        self._subjects = subjects
        self._writer = writer
        self._config = config
        self._on_rejected = on_rejected
        self._stopping = anyio.Event()
        self._stopped = anyio.Event()
        self._running = False
        self._prefix_len = len(subjects.trace(""))
        self.written = 0
        """Records committed to the log (ids it held already included: it dropped those)."""
        self.rejected = 0
        self.batches = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Create the stream and consumer, then ingest until `shutdown()`."""
        cfg = self._config
        js = jetstream(self._nc)
        await ensure_trace_stream(
            js,
            self._subjects,
            max_bytes=cfg.stream_max_bytes,
            max_age_s=cfg.stream_max_age_s,
            duplicate_window_s=cfg.stream_duplicate_window_s,
            replicas=self._stream_replicas,
        )
        # room for the batch being written, the one waiting and the one being fetched
        consumer = await ensure_trace_consumer(
            js,
            self._subjects,
            ack_wait_s=cfg.ingest_ack_wait_s,
            max_ack_pending=cfg.ingest_batch * 4,
        )
        puller = BatchPuller(
            self._nc,
            self._subjects.trace_stream,
            consumer,
            batch=cfg.ingest_batch,
            wait_s=FETCH_WAIT_S,
        )
        send, receive = anyio.create_memory_object_stream[_Batch](1)
        self._running = True
        try:
            async with puller, anyio.create_task_group() as tg:
                task_status.started()
                tg.start_soon(self._commit_batches, receive)
                await self._fetch_batches(puller, send)
        finally:
            self._running = False
            self._stopped.set()

    async def shutdown(self) -> None:
        """Stop fetching and return once the batches in hand are written and acked (within
        `FETCH_WAIT_S` plus a write); repeatable."""
        self._stopping.set()
        if self._running:
            await self._stopped.wait()

    async def _fetch_batches(
        self, puller: BatchPuller, send: MemoryObjectSendStream[_Batch]
    ) -> None:
        async with send:
            while not self._stopping.is_set():
                try:
                    messages = await puller.fetch()
                except nats.errors.Error as exc:  # the bus is reconnecting: try again shortly
                    log.debug("trace fetch failed: %r", exc)
                    await anyio.sleep(0.1)
                    continue
                if not messages:
                    continue
                batch = await self._check(messages)
                if batch.messages:
                    await send.send(batch)

    async def _check(self, messages: list[Msg]) -> _Batch:
        # On the writer's thread, between its writes: run beside them, the checks would only
        # take turns with the writes for the GIL (and the writes wait for each turn).
        checked = await self._writer.call(self._check_messages, messages)
        for msg, agent, body, reason, line in checked.refusals:
            self._refuse(msg, agent, body, reason, line)
        for msg in checked.unusable:
            await self._term(msg)
        return checked.batch

    def _check_messages(self, messages: list[Msg]) -> _Checked:
        records: list[WireRecord | DecisionRecord] = []
        accepted: list[Msg] = []
        checked = _Checked(_Batch(records, accepted), [], [])
        prefix_len = self._prefix_len
        max_skew_s = self._config.max_clock_skew_s
        for msg in messages:
            agent = msg.subject[prefix_len:]
            headers = msg.headers
            count = headers.get(RECORDS_HEADER) if headers else None
            if count is None:
                bodies = [msg.data]
            else:
                bodies = msg.data.split(b"\n")
                if count != str(len(bodies)):
                    reason = f"{RECORDS_HEADER} says {count} records, the message has {len(bodies)}"
                    checked.refusals.append((msg, agent, msg.data, reason, None))
                    checked.unusable.append(msg)
                    continue
            kept = 0
            stored_at = _stored_at(msg)
            for line, body in enumerate(bodies):
                try:
                    records.append(
                        parse_published(agent, body, stored_at=stored_at, max_skew_s=max_skew_s)
                    )
                except RecordRejected as exc:
                    checked.refusals.append((msg, agent, body, exc.reason, line if count else None))
                    continue
                kept += 1
            if kept:  # acked once its records are committed
                accepted.append(msg)
            else:
                checked.unusable.append(msg)
        return checked

    def _refuse(self, msg: Msg, agent: str, body: bytes, reason: str, line: int | None) -> None:
        self.rejected += 1
        seq = msg.metadata.sequence.stream if msg.reply else None
        where = f"stream seq {seq}" + (f", line {line + 1}" if line is not None else "")
        log.warning(
            "refused a decision record on %s (%s, %d bytes): %s",
            msg.subject,
            where,
            len(body),
            reason,
        )
        if self._on_rejected is not None:
            self._on_rejected(
                "trace.rejected",
                agent=agent,
                decision="rejected",
                reason=reason,
                inputs={
                    "subject": msg.subject,
                    "stream_seq": seq,
                    "line": None if line is None else line + 1,
                    "size": len(body),
                    "digest": body_digest(body),
                },
            )

    async def _term(self, msg: Msg) -> None:
        """Nothing in `msg` can be stored: JetStream must not deliver it again."""
        try:
            await msg.term()
        except nats.errors.Error as exc:  # delivered again later, and refused again then
            log.debug("term failed: %r", exc)

    async def _commit_batches(self, receive: MemoryObjectReceiveStream[_Batch]) -> None:
        failures = 0
        async with receive:
            async for batch in receive:
                try:
                    result = await self._writer.append(batch.records)
                except Exception:
                    # not acked: JetStream delivers them again after ack_wait
                    failures += 1
                    log.exception(
                        "writing %d decision records failed; they will be delivered again",
                        len(batch.records),
                    )
                    await anyio.sleep(min(0.1 * 2**failures, 5.0))
                    continue
                failures = 0
                self.batches += 1
                self.written += len(batch.records)
                if result.duplicates:
                    log.debug("the log held %d of these ids already", result.duplicates)
                try:
                    for msg in batch.messages:
                        await msg.ack()
                except nats.errors.Error as exc:  # unacked ones come back; the log drops them
                    log.warning("acking committed decision records failed: %r", exc)

    @property
    def stats(self) -> dict[str, int]:
        """Counters for status views and metrics."""
        return {"written": self.written, "rejected": self.rejected, "batches": self.batches}
