"""The one writer of a decision log in an async process: every producer's batches, in order.

The daemon has two producers, its own `Recorder` (a few records at a time) and the trace ingest
(up to thousands per fetch). SQLite allows one writer per file, and `DecisionLog` owns one
connection; rather than let threads queue on its lock, `LogWriter` takes batches from every
producer in arrival order and appends them from a single task, one transaction at a time in a
worker thread (SQLite releases the GIL while it writes, so the event loop keeps fetching and
checking the next batch meanwhile). Batches queued while a transaction runs are merged into the
next one (group commit): one COMMIT for the recorder's records and the ingest's.

A merged transaction that fails is retried batch by batch, so one producer's unstorable record
fails only that producer's `append`, never the others'.

Observers (`add_observer`: the metrics, the live decision feed) see every record the log
stored, whichever producer gave it (the daemon's recorder or the trace ingest of replicas'
records), once: ids the log held already (a redelivery) and repeats within a batch are left
out. They are called in committed order from a task of their own, so the next transaction is
not held up by them; a slow observer only lets committed batches queue for it. The records are
those given to `append` (before redaction; a `WireRecord` keeps the text a replica sent), and
an observer's failure is logged, never raised.

Checkpoints by time. The log signs a checkpoint every `checkpoint_every` records (in the
transaction that reaches the count) and at `close()`; with `checkpoint_interval_s` the writer
also signs one when the newest checkpoint is that old and records were appended since, so a
quiet daemon does not leave its last records on the hash chain alone (issue 17, item 11). The
signature runs on the writer's thread between two writes, like any transaction.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, TypeVarTuple, Unpack

import anyio
from anyio.abc import TaskStatus

from ._errors import DecisionLogDamaged, DecisionLogError
from ._log import AppendResult, DecisionLog
from ._record import DecisionRecord
from ._wire import WireRecord

__all__ = ["LogWriter"]

log = logging.getLogger("agentd.trace")

T = TypeVar("T")
Args = TypeVarTuple("Args")

# Records merged into one transaction at most: large enough to amortize COMMIT, small enough
# that one transaction does not hold the recorder's records back for long.
MAX_MERGED = 8192

CommitObserver = Callable[[Sequence[DecisionRecord | WireRecord]], Awaitable[None]]
"""Called with the records of each committed transaction that the log did not hold yet."""


@dataclass(eq=False)
class _Pending:
    records: Sequence[DecisionRecord | WireRecord]
    done: anyio.Event = field(default_factory=anyio.Event)
    result: AppendResult | None = None
    error: BaseException | None = None


class LogWriter:
    """Serializes appends to `decision_log` from any number of tasks; closes it at the end."""

    def __init__(
        self, decision_log: DecisionLog, *, checkpoint_interval_s: float | None = None
    ) -> None:
        if checkpoint_interval_s is not None and checkpoint_interval_s <= 0:
            raise ValueError("checkpoint_interval_s must be positive")
        self.log = decision_log
        self._interval_s = checkpoint_interval_s
        self._timer = anyio.CancelScope()
        self._queue: deque[_Pending] = deque()
        self._wake = anyio.Event()
        self._closing = False
        self._stopped = anyio.Event()
        self._running = False
        self._thread = anyio.CapacityLimiter(1)
        self._committed = anyio.Event()
        # an anchored log: nothing is written until its anchor was checked (`release`)
        self._released = anyio.Event()
        if not decision_log.held:
            self._released.set()
        self.transactions = 0
        """Transactions committed so far (merged batches count once)."""
        self._observers: list[CommitObserver] = []
        self._committed_batches: deque[Sequence[DecisionRecord | WireRecord]] = deque()
        self._observe_wake = anyio.Event()
        self._written_all = False

    def add_observer(self, observer: CommitObserver) -> None:
        """Call `observer` with the newly stored records of every committed transaction."""
        self._observers.append(observer)

    async def append(self, records: Sequence[DecisionRecord | WireRecord]) -> AppendResult:
        """Store `records` in the log; return once they are committed (or raise why not).

        The result is that of the transaction that stored them, which may hold other
        producers' records too.
        """
        if self._closing:
            raise DecisionLogError(f"the decision log {self.log.path} is closing")
        pending = _Pending(records)
        self._queue.append(pending)
        self._wake.set()
        if not self._running:  # not started yet (or already stopped): write inline
            await self._write_next()
            await self._tell_observers()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    async def call(self, func: Callable[[Unpack[Args]], T], *args: *Args) -> T:
        """Run `func(*args)` on the writer's thread, between two writes.

        For CPU work that feeds the writer (checking records): in a thread of its own it would
        run beside the writes and only trade the GIL with them, each write waiting its turn.
        """
        return await anyio.to_thread.run_sync(func, *args, limiter=self._thread)

    def release(self) -> None:
        """Start writing: the log's anchor was checked (`DecisionLog.anchor`)."""
        self._released.set()

    async def next_commit(self) -> None:
        """Wait until the next transaction commits (for tests and status views)."""
        await self._committed.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Write queued batches until `close()`."""
        self._running = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._observe_loop)
                if self._interval_s is not None:
                    tg.start_soon(self._checkpoint_loop, self._interval_s)
                task_status.started()
                await self._write_loop()
                self._timer.cancel()
                self._written_all = True  # the observers finish what is queued, then return
                self._observe_wake.set()
        finally:
            self._running = False
            self._stopped.set()

    async def _write_loop(self) -> None:
        await self._released.wait()  # queued batches wait for the anchor check
        while not (self._closing and not self._queue):
            if not self._queue:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            with anyio.CancelScope(shield=True):  # a started commit is seen through
                await self._write_next()

    async def _checkpoint_loop(self, interval_s: float) -> None:
        """Sign when the newest checkpoint is `interval_s` old and records came since."""
        with self._timer:
            await self._released.wait()  # an anchored log signs nothing before its check
            started, tried = time.time(), 0.0
            while True:
                if not self.log.unsigned:
                    await self.next_commit()
                    continue
                latest = self.log.last_checkpoint
                signed_at = started if latest is None else latest.signed_at_us / 1e6
                # `tried`: a log that refuses to sign (rewritten under it) is not asked in a loop
                wait = max(signed_at, tried) + interval_s - time.time()
                if wait > 0:
                    await anyio.sleep(wait)
                    continue
                tried = time.time()
                with anyio.CancelScope(shield=True):  # a started signature is seen through
                    try:
                        await self.call(self.log.checkpoint)
                    except Exception:  # a full disk, say: tried again after the interval
                        log.exception("signing the decision log's timed checkpoint failed")
                        continue
                self._committed.set()  # the anchor publishes it at once
                self._committed = anyio.Event()

    async def _observe_loop(self) -> None:
        while True:
            with anyio.CancelScope(shield=True):  # a batch taken is told to every observer
                await self._tell_observers()
            if self._written_all:
                return
            await self._observe_wake.wait()
            self._observe_wake = anyio.Event()

    async def _tell_observers(self) -> None:
        while self._committed_batches:
            batch = self._committed_batches.popleft()
            for observer in self._observers:
                try:
                    await observer(batch)
                except Exception:
                    log.exception("a decision-record observer failed")

    def _queue_for_observers(
        self, records: Sequence[DecisionRecord | WireRecord], result: AppendResult
    ) -> None:
        """Queue what `result` stored of `records` for the observers."""
        if not self._observers or result.appended == 0:
            return
        if result.duplicates:
            seen = set(result.held)
            new = []
            for record in records:
                if record.id not in seen:
                    seen.add(record.id)
                    new.append(record)
            records = new
        self._committed_batches.append(records)
        self._observe_wake.set()

    async def close(self) -> None:
        """Write what is queued, then sign a final checkpoint and close the log (repeatable)."""
        self._closing = True
        self._wake.set()
        self._released.set()  # what is queued is written (a refused log refuses it)
        with anyio.CancelScope(shield=True):
            if self._running:
                await self._stopped.wait()
            while self._queue:
                await self._write_next()
            await self._tell_observers()
            await anyio.to_thread.run_sync(self.log.close, limiter=self._thread)

    async def _write_next(self) -> None:
        merged: list[_Pending] = []
        count = 0
        while self._queue and (not merged or count + len(self._queue[0].records) <= MAX_MERGED):
            pending = self._queue.popleft()
            merged.append(pending)
            count += len(pending.records)
        if not merged:
            return
        records = [r for pending in merged for r in pending.records]
        try:
            result = await anyio.to_thread.run_sync(
                self.log.append_batch, records, limiter=self._thread
            )
        except Exception as exc:
            if len(merged) == 1 or isinstance(exc, DecisionLogDamaged):  # refused: all of them
                for pending in merged:
                    pending.error = exc
            else:
                log.warning("a merged write of %d records failed (%s); retrying apart", count, exc)
                await self._write_apart(merged)
        else:
            self.transactions += 1
            for pending in merged:
                pending.result = result
            self._queue_for_observers(records, result)
        for pending in merged:
            pending.done.set()
        self._committed.set()
        self._committed = anyio.Event()

    async def _write_apart(self, merged: list[_Pending]) -> None:
        for pending in merged:
            try:
                pending.result = await anyio.to_thread.run_sync(
                    self.log.append_batch, pending.records, limiter=self._thread
                )
                self.transactions += 1
                self._queue_for_observers(pending.records, pending.result)
            except Exception as exc:
                pending.error = exc
