"""One agent replica: pulls its agent's inbox, runs the graph, replies, and acks after the run.

Delivery guarantees (DESIGN.md, Data paths: Messages): a message is acked only once its run has
finished, so a replica that dies mid-run loses nothing; runs of one conversation are processed in
arrival order, one at a time; a run that keeps failing goes to the dead-letter subject after the
consumer's max_deliver with its last error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import deque
from typing import Any

import anyio
import nats.errors
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from agentd.bus import Message, RunResult, Subjects, connect, jsonable, new_id
from agentd.config import LoadedAgent
from agentd.worker._context import AgentContext, RunInfo
from agentd.worker._graph import Runnable, load_graph
from agentd.worker._settings import WorkerSettings

__all__ = ["AgentWorker"]

log = logging.getLogger("agentd.worker")


class AgentWorker:
    """Serve one agent's inbox until `shutdown()` (or SIGTERM in `__main__`)."""

    def __init__(self, settings: WorkerSettings, agent: LoadedAgent) -> None:
        self.settings = settings
        self.agent = agent
        self.subjects = Subjects(settings.prefix)
        self._draining = anyio.Event()
        self._inflight = 0
        self._held: dict[str, Msg] = {}  # message id -> JetStream message not yet settled
        self._queues: dict[str, deque[Msg]] = {}  # conversation -> messages waiting their turn
        self._completed = 0
        self._failed = 0
        self._settled = anyio.Event()  # set (and replaced) each time a held message settles
        self._max_deliver = 1
        self._ack_wait_s = 30.0
        self._last_error: str | None = None
        self._duplicates = 0
        self._runs: KeyValue | None = None

    async def shutdown(self) -> None:
        """Stop pulling new work; runs in flight finish within the drain grace."""
        self._draining.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nc = await connect(self.settings.nats_url, name=f"agentd-worker-{self.settings.replica}")
        try:
            js = nc.jetstream()
            consumer = self.subjects.inbox_consumer(self.agent.name)
            psub = await js.pull_subscribe_bind(consumer, stream=self.subjects.inbox_stream)
            self._runs = await js.key_value(self.subjects.runs_bucket)
            info = await psub.consumer_info()
            self._max_deliver = info.config.max_deliver or 1
            self._ack_wait_s = info.config.ack_wait or 30.0
            context = AgentContext(nc, self.subjects, self.agent.name, self.settings.replica)
            graph = load_graph(self.agent.directory, self.agent.spec.graph, context)
            async with anyio.create_task_group() as runs:
                async with anyio.create_task_group() as service:
                    service.start_soon(self._heartbeat, nc)
                    service.start_soon(self._keep_in_progress)
                    await self._publish_heartbeat(nc, "ready")
                    log.info("%s ready (version %s)", self.settings.replica, self.agent.version)
                    task_status.started()
                    await self._pull(psub, runs, nc, js, graph, context)
                    service.cancel_scope.cancel()
                await self._drain(runs, nc)
        finally:
            with anyio.CancelScope(shield=True):
                # every message is settled by now; drain() would wait out its 30 s timeout on
                # the pull subscription, so flush the acks and close
                with contextlib.suppress(Exception):
                    await nc.flush(timeout=2)
                await nc.close()
            log.info("%s stopped", self.settings.replica)

    async def _pull(
        self,
        psub: Any,
        runs: TaskGroup,
        nc: Client,
        js: JetStreamContext,
        graph: Runnable,
        context: AgentContext,
    ) -> None:
        while not self._draining.is_set():
            free = self.agent.spec.concurrency - self._inflight
            if free <= 0:
                await self._settled.wait()
                continue
            try:
                batch = await psub.fetch(free, timeout=0.5)
            except TimeoutError:  # nothing to do (nats-py raises asyncio's and its own)
                continue
            except nats.errors.Error as exc:  # the bus is reconnecting: try again shortly
                log.debug("fetch failed: %r", exc)
                await anyio.sleep(0.1)
                continue
            for msg in batch:
                self._accept(msg, runs, nc, js, graph, context)

    def _accept(
        self,
        msg: Msg,
        runs: TaskGroup,
        nc: Client,
        js: JetStreamContext,
        graph: Runnable,
        context: AgentContext,
    ) -> None:
        try:
            message = Message.model_validate_json(msg.data)
        except ValidationError as exc:
            runs.start_soon(self._dead_letter, js, msg, None, f"malformed message: {exc}")
            return
        self._inflight += 1
        self._held[message.id] = msg
        queue = self._queues.get(message.conversation_id)
        if queue is not None:  # a run of this conversation is active: wait behind it
            queue.append(msg)
            return
        self._queues[message.conversation_id] = deque([msg])
        runs.start_soon(self._conversation, message.conversation_id, nc, js, graph, context)

    async def _conversation(
        self,
        conversation: str,
        nc: Client,
        js: JetStreamContext,
        graph: Runnable,
        ctx: AgentContext,
    ) -> None:
        queue = self._queues[conversation]
        try:
            while queue:
                msg = queue[0]
                await self._run_one(msg, nc, js, graph, ctx)
                queue.popleft()
        finally:
            del self._queues[conversation]

    async def _run_one(
        self, msg: Msg, nc: Client, js: JetStreamContext, graph: Runnable, ctx: AgentContext
    ) -> None:
        message = Message.model_validate_json(msg.data)
        run = RunInfo(new_id(), message.id, message.conversation_id, message.sender)
        started = time.monotonic()
        settled = False
        try:
            finished = await self._finished(message.id)
            if finished is not None:  # an earlier delivery ran it to completion: do not rerun
                self._duplicates += 1
                log.info("message %s already ran (run %s); acking", message.id, finished.run_id)
                await self._settle(msg, nc, message, finished)
                settled = True
                return
            token = ctx._enter(run)
            try:
                with anyio.fail_after(self.agent.spec.run_timeout_s):
                    output = await graph.ainvoke(
                        message.payload,
                        {"configurable": {"thread_id": message.conversation_id}},
                    )
            finally:
                ctx._exit(token)
            result = self._result(message, run, started, ok=True, output=jsonable(output))
            result = await self._record_finished(message.id, result)
            await self._settle(msg, nc, message, result)
            settled = True
            self._completed += 1
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._last_error = error
            log.warning("run %s of message %s failed: %s", run.run_id, message.id, error)
            delivered = msg.metadata.num_delivered if msg.metadata else 1
            with anyio.CancelScope(shield=True):
                if delivered >= self._max_deliver:
                    await self._dead_letter(js, msg, message, error)
                    if message.reply_to:
                        result = self._result(message, run, started, ok=False, error=error)
                        await nc.publish(message.reply_to, result.to_json())
                else:
                    await msg.nak(delay=min(0.1 * 2**delivered, 10.0))
            settled = True
            self._failed += 1
        finally:
            if not settled:  # cancelled while draining: hand it back for another replica
                with anyio.CancelScope(shield=True):
                    await msg.nak()
            self._held.pop(message.id, None)
            self._inflight -= 1
            self._settled.set()
            self._settled = anyio.Event()

    async def _finished(self, message_id: str) -> RunResult | None:
        assert self._runs is not None
        try:
            entry = await self._runs.get(message_id)
        except KeyNotFoundError:
            return None
        return RunResult.model_validate_json(entry.value or b"{}")

    async def _record_finished(self, message_id: str, result: RunResult) -> RunResult:
        """Record the run as the message's one completion; if another delivery won the race,
        its result is the message's result."""
        assert self._runs is not None
        try:
            await self._runs.create(message_id, result.to_json())
        except KeyWrongLastSequenceError:
            self._duplicates += 1
            earlier = await self._finished(message_id)
            return earlier or result
        return result

    async def _settle(self, msg: Msg, nc: Client, message: Message, result: RunResult) -> None:
        if message.reply_to:
            await nc.publish(message.reply_to, result.to_json())
        await msg.ack()

    def _result(
        self,
        message: Message,
        run: RunInfo,
        started: float,
        *,
        ok: bool,
        output: Any = None,
        error: str | None = None,
    ) -> RunResult:
        return RunResult(
            ok=ok,
            message_id=message.id,
            run_id=run.run_id,
            agent=self.agent.name,
            replica=self.settings.replica,
            output=output,
            error=error,
            duration_s=time.monotonic() - started,
        )

    async def _dead_letter(
        self, js: JetStreamContext, msg: Msg, message: Message | None, error: str
    ) -> None:
        headers = {
            "Agentd-Error": error[:1000].replace("\n", " "),
            "Agentd-Agent": self.agent.name,
            "Agentd-Deliveries": str(msg.metadata.num_delivered if msg.metadata else 1),
        }
        if message is not None:
            headers["Nats-Msg-Id"] = f"dlq-{message.id}"
        await js.publish(self.subjects.dead_letter(self.agent.name), msg.data, headers=headers)
        await msg.term()

    async def _drain(self, runs: TaskGroup, nc: Client) -> None:
        """Wait for runs in flight up to the grace period, then cancel (they nak themselves)."""
        log.info("%s draining: %d run(s) in flight", self.settings.replica, self._inflight)
        await self._publish_heartbeat(nc, "draining")
        with anyio.move_on_after(self.settings.drain_grace_s):
            while self._inflight:
                await self._settled.wait()
        runs.cancel_scope.cancel()

    async def _keep_in_progress(self) -> None:
        """Tell JetStream that held messages are still being worked on (long runs, queued runs)."""
        while True:
            await anyio.sleep(max(self._ack_wait_s / 3, 0.1))
            for msg in list(self._held.values()):
                try:
                    await msg.in_progress()
                except Exception as exc:
                    log.debug("in-progress ack failed: %s", exc)

    async def _heartbeat(self, nc: Client) -> None:
        while True:
            await anyio.sleep(self.settings.heartbeat_s)
            await self._publish_heartbeat(nc, "ready")

    async def _publish_heartbeat(self, nc: Client, state: str) -> None:
        beat = {
            "agent": self.agent.name,
            "replica": self.settings.replica,
            "pid": os.getpid(),
            "version": self.agent.version,
            "state": state,
            "inflight": self._inflight,
            "completed": self._completed,
            "failed": self._failed,
            "duplicates": self._duplicates,
            "last_error": self._last_error,
            "ts": time.time(),
        }
        try:
            await nc.publish(self.subjects.heartbeat(self.agent.name), json.dumps(beat).encode())
        except Exception as exc:  # reconnecting: the next beat will go through
            log.debug("heartbeat not sent: %s", exc)
