"""The recorder of processes outside the daemon: decision records to `<prefix>.trace.<agent>`.

Workers (and, later, agents joining through the registration API) describe their decisions with
the same `record(kind, **fields)` call as the daemon's components; `TracePublisher` publishes
each record to the agent's trace subject in the AGENTD_TRACE JetStream stream, from which the
daemon writes it to the decision log.

A run is not slowed by it: `record()` validates and queues (a few microseconds) and returns;
one background task keeps up to `max_in_flight` publishes outstanding and collects their acks as
they come (JetStream's async publish: the acks of a window arrive together, so the cost of a
round trip is paid once per window, not per record). When records queue up faster than they
are acked, one message carries several (up to `max_records_per_message`, one record body per
line, their count in the `Agentd-Records` header): the per-message costs of the client, the
server and the daemon's ingest are paid once for all of them; a record recorded alone goes
alone. `Nats-Msg-Id` is the record id (for a message of several, the first record's id and the
count of the others), so a publish retried after a lost ack is dropped by the stream's
duplicate window, and by the log, which drops any record id it holds.

A failed or unanswered publish is retried with backoff until it is acked or the publisher is
closed; the queue is bounded (`max_pending`): when it is full, `record()` drops the record and
counts it in `dropped` (with an error log line) rather than block the run or grow without
limit, while `put()` waits for room. `close()` stops taking records and waits (up to its
deadline) until every queued record is acked.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, NamedTuple

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.js.api import PubAck

from agentd.bus import Subjects

from ._record import DecisionRecord, Lineage

__all__ = ["RECORDS_HEADER", "TracePublisher", "build_record"]

RECORDS_HEADER = "Agentd-Records"
"""Set on a message that holds several records: their count, one record body per line."""
# well below NATS's default max_payload (1 MiB)
MAX_MESSAGE_BYTES = 256 * 1024

log = logging.getLogger("agentd.trace")

_FIELDS = frozenset(DecisionRecord.model_fields)


class _Packet(NamedTuple):
    msg_id: str
    payload: bytes
    records: int
    ids: tuple[str, ...]


def build_record(kind: str, fields: dict[str, Any]) -> DecisionRecord:
    """A validated record from keyword fields: `DecisionRecord` fields by name, anything else
    (not None) into `attributes`. Raises ValueError (pydantic's) when a field is invalid."""
    known = {k: v for k, v in fields.items() if k in _FIELDS and v is not None}
    extra = {k: v for k, v in fields.items() if k not in _FIELDS and v is not None}
    if extra:
        known["attributes"] = {**(known.get("attributes") or {}), **extra}
    return DecisionRecord.model_validate({"kind": kind, **known})


class TracePublisher:
    """Publishes `agent`'s decision records to its trace subject; see the module docstring."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        agent: str,
        *,
        replica: str | None = None,
        lineage: Lineage | None = None,
        max_pending: int = 10_000,
        max_in_flight: int = 256,
        max_records_per_message: int = 64,
        ack_timeout_s: float = 5.0,
        retry_max_s: float = 2.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(publish_async_max_pending=max_in_flight * 2)
        self.subject = subjects.trace(agent)
        self.agent = agent
        self.replica = replica
        self.lineage = lineage
        self.max_pending = max_pending
        self.max_in_flight = max_in_flight
        self.max_records_per_message = max_records_per_message
        self.ack_timeout_s = ack_timeout_s
        self.retry_max_s = retry_max_s
        self._queue: deque[tuple[str, bytes]] = deque()
        # message id -> (when sent, the ack's future, the message) for publishes awaiting acks
        self._in_flight: dict[str, tuple[float, asyncio.Future[PubAck], _Packet]] = {}
        self._in_flight_records = 0
        self._retry: deque[_Packet] = deque()
        self._retry_records = 0
        self._wake = anyio.Event()
        self._room = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._unacked: set[str] = set()
        self._progress = anyio.Event()
        self._closing = False
        self._backoff_s = 0.0
        self.published = 0
        """Records acked by the stream (duplicates included)."""
        self.messages = 0
        """Messages acked by the stream (each holds one or more records)."""
        self.duplicates = 0
        """Acks that said the stream held the id already."""
        self.dropped = 0
        """Records `record()` dropped because the queue was full."""
        self.retries = 0

    # taking records
    def record(self, kind: str, **fields: Any) -> DecisionRecord | None:
        """Queue one decision; never blocks, never raises.

        Fields as `build_record` takes them; `agent`, `replica` and `lineage` default to the
        publisher's. Returns the record (its id, to link children to it), or None when it was
        invalid or the queue was full (both logged).
        """
        fields.setdefault("agent", self.agent)
        fields.setdefault("replica", self.replica)
        fields.setdefault("lineage", self.lineage)
        try:
            record = build_record(kind, fields)
        except ValueError as exc:
            log.error("dropping a malformed decision record of kind %s: %s", kind, exc)
            return None
        return record if self.offer(record) else None

    def offer(self, record: DecisionRecord) -> bool:
        """Queue `record` if there is room; False (and counted in `dropped`) if not."""
        if self._closing or self.pending >= self.max_pending:
            self.dropped += 1
            log.error(
                "dropping decision record %s (%s): %s",
                record.id,
                record.kind,
                "the publisher is closed" if self._closing else "the trace queue is full",
            )
            return False
        self._enqueue(record)
        return True

    async def put(self, record: DecisionRecord) -> None:
        """Queue `record`, waiting for room: back-pressure instead of dropping."""
        while self.pending >= self.max_pending and not self._closing:
            self._room = anyio.Event()
            await self._room.wait()
        if self._closing:
            raise RuntimeError("the trace publisher is closed")
        self._enqueue(record)

    def _enqueue(self, record: DecisionRecord) -> None:
        self._unacked.add(record.id)
        self._queue.append((record.id, record.body_json().encode()))
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._wake.set()

    @property
    def pending(self) -> int:
        """Records taken and not acked yet."""
        return len(self._queue) + self._retry_records + self._in_flight_records

    # publishing
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Publish queued records until `close()` and the queue is empty (or cancelled)."""
        task_status.started()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._expire_unanswered)
            while not (self._closing and self.pending == 0):
                if self._backoff_s:
                    await anyio.sleep(self._backoff_s)
                    self._backoff_s = 0.0
                sent = await self._send_some()
                if not sent:
                    await self._wake.wait()
                    self._wake = anyio.Event()
            tg.cancel_scope.cancel()

    async def _send_some(self) -> int:
        sent = 0
        while len(self._in_flight) < self.max_in_flight and (self._retry or self._queue):
            if self._retry:
                packet = self._retry.popleft()
                self._retry_records -= packet.records
            else:
                packet = self._pack()
            if packet.msg_id in self._in_flight:  # a retry of a publish still unanswered
                continue
            headers = {"Nats-Msg-Id": packet.msg_id}
            if packet.records > 1:
                headers[RECORDS_HEADER] = str(packet.records)
            try:
                future = await self._js.publish_async(self.subject, packet.payload, headers=headers)
            except nats.errors.Error as exc:  # not connected, reconnecting, buffer full
                self._failed(packet, exc)
                return sent
            self._in_flight[packet.msg_id] = (time.monotonic(), future, packet)
            self._in_flight_records += packet.records
            future.add_done_callback(functools.partial(self._acked, packet))
            sent += 1
        return sent

    def _pack(self) -> _Packet:
        """The next message: the queued records that fit, in order (one when one is queued)."""
        queue = self._queue
        record_id, body = queue.popleft()
        # a body is compact JSON (no raw newline); one with a newline could not share a message
        if not queue or self.max_records_per_message == 1 or b"\n" in body:
            return _Packet(record_id, body, 1, (record_id,))
        bodies, ids, size = [body], [record_id], len(body)
        while queue and len(bodies) < self.max_records_per_message:
            following = queue[0][1]
            size += len(following) + 1
            if size > MAX_MESSAGE_BYTES or b"\n" in following:
                break
            following_id, following = queue.popleft()
            bodies.append(following)
            ids.append(following_id)
        # The first record's id names the message: a record is in one message only, and a
        # retry resends the same message, so the stream's duplicate window still applies.
        msg_id = record_id if len(bodies) == 1 else f"{record_id}+{len(bodies) - 1}"
        return _Packet(msg_id, b"\n".join(bodies), len(bodies), tuple(ids))

    def _acked(self, packet: _Packet, future: asyncio.Future[PubAck]) -> None:
        entry = self._in_flight.get(packet.msg_id)
        if entry is None or entry[1] is not future:
            return
        del self._in_flight[packet.msg_id]
        self._in_flight_records -= packet.records
        if future.cancelled():
            self._failed(packet, TimeoutError("no ack"))
        elif (exc := future.exception()) is not None:
            self._failed(packet, exc)
        else:
            self.published += packet.records
            self._unacked.difference_update(packet.ids)
            self._progress.set()
            self._progress = anyio.Event()
            self.messages += 1
            self.duplicates += packet.records if future.result().duplicate else 0
            self._backoff_s = 0.0
        self._wake.set()
        if self.pending < self.max_pending:
            self._room.set()
        if self.pending == 0:
            self._idle.set()

    def _failed(self, packet: _Packet, exc: BaseException) -> None:
        self.retries += 1
        self._retry.append(packet)
        self._retry_records += packet.records
        # the stream is missing, full or the bus is down: wait before the next try
        self._backoff_s = min(max(self._backoff_s * 2, 0.05), self.retry_max_s)
        if self.retries % 1000 == 1:
            log.warning("publishing decision records failed (%r); retrying", exc)
        self._wake.set()

    async def _expire_unanswered(self) -> None:
        """A publish whose ack never comes (the connection dropped it) is sent again."""
        while True:
            await anyio.sleep(max(self.ack_timeout_s / 4, 0.05))
            now = time.monotonic()
            for sent_at, future, _ in list(self._in_flight.values()):
                if now - sent_at > self.ack_timeout_s:
                    future.cancel()  # its callback queues the retry

    async def wait_published(self, record_ids: Iterable[str], timeout_s: float = 5.0) -> bool:
        """Wait until the stream acked these records (taken by this publisher); False if
        `timeout_s` ran out first. A worker calls it before acking a run's inbox message, so
        a replica that dies right after the ack has lost none of the run's records."""
        waiting = [record_id for record_id in record_ids if record_id in self._unacked]
        with anyio.move_on_after(timeout_s):
            while any(record_id in self._unacked for record_id in waiting):
                await self._progress.wait()
            return True
        return False

    # shutdown
    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record taken so far is acked; False if `timeout_s` ran out."""
        with anyio.move_on_after(timeout_s):
            while self.pending:
                await self._idle.wait()
            return True
        return False

    async def close(self, timeout_s: float = 10.0) -> bool:
        """Stop taking records and flush; repeatable. Returns False, logging how many records
        were left unpublished, when `timeout_s` ran out."""
        self._closing = True
        self._wake.set()
        self._room.set()
        flushed = await self.flush(timeout_s)
        if not flushed:
            log.error(
                "%d decision records of %s were not published within %.1fs",
                self.pending,
                self.agent,
                timeout_s,
            )
        return flushed
