"""One agent replica: pulls its agent's inbox, runs the graph, replies, and acks after the run.

Delivery guarantees (docs/architecture.md, "Messages and runs"):
- a message is acked only once its run has finished, so a replica that dies mid-run loses
  nothing: JetStream redelivers it;
- a redelivered message whose run already finished is not run again (the run ledger);
- runs of one conversation happen one at a time (a lease across replicas) and in arrival order
  (a queue per conversation in the replica that holds the lease); a failed run is retried in
  place, before the conversation's later messages, and after `max_deliver` attempts it goes to
  the dead-letter subject with its last error.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import nats.errors
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from agentd.bus import Credentials, Message, RunResult, Subjects, connect, new_id
from agentd.config import LoadedAgent
from agentd.telemetry import extract_context, invoke_agent_span, set_agent_output
from agentd.trace import TracePublisher
from agentd.worker._beat_thread import HeartbeatThread
from agentd.worker._checkpoints import open_checkpointer
from agentd.worker._context import AgentContext, RunInfo
from agentd.worker._dead_letters import give_up
from agentd.worker._failures import permanent_reason
from agentd.worker._graph import Runnable, open_graph
from agentd.worker._io_shapes import GraphInput, run_reply
from agentd.worker._ledger import RunLedger, run_ledger
from agentd.worker._local_tools import install as govern_local_tools
from agentd.worker._local_tools import settle as settle_local_tools
from agentd.worker._resume import run_message
from agentd.worker._run_records import RunRecords, agent_lineage
from agentd.worker._settings import WorkerSettings
from agentd.worker._status import ReplicaStatus

__all__ = ["AgentWorker"]


def _tls_context(ca_file: Path | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=str(ca_file)) if ca_file else None


log = logging.getLogger("agentd.worker")

# how long a replica waits between tries for a conversation another replica is running
LEASE_POLL_S = 0.02


class AgentWorker:
    """Serve one agent's inbox until `shutdown()` (or SIGTERM in `__main__`)."""

    def __init__(self, settings: WorkerSettings, agent: LoadedAgent) -> None:
        self.settings = settings
        self.agent = agent
        # the agent's name as the daemon knows it: a spawned instance runs its template's spec
        # under its own name, inbox and leases
        self.name = settings.agent
        self.subjects = Subjects(settings.prefix)
        # ready / paused / draining, runs in flight and counts: what heartbeats tell the daemon
        self.status = ReplicaStatus(self.name, settings.replica, agent.version, self.subjects)
        self._held: dict[str, Msg] = {}  # message id -> JetStream message not yet settled
        self._queues: dict[str, deque[tuple[Msg, Message]]] = {}  # conversation -> its turn
        self._settled = anyio.Event()  # set (and replaced) each time a held message settles
        self._max_deliver = settings.max_deliver
        self._ack_wait_s = settings.ack_wait_s
        self._dedupe_window_s = settings.dedupe_window_s
        self._received: dict[str, float] = {}  # message id -> when it arrived
        # set in run()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._ledger: RunLedger | None = None
        self._graph: Runnable | None = None
        self._graph_input: GraphInput | None = None  # what the graph's input schema takes
        self._exits = contextlib.AsyncExitStack()  # a context-manager factory's graph
        self._context: AgentContext | None = None
        self._trace: TracePublisher | None = None
        self._lineage = agent_lineage(agent)  # once: the files do not change under a replica
        self._records = RunRecords(None)

    async def shutdown(self) -> None:
        """Stop pulling new work; runs in flight finish within the drain grace."""
        self.status.drain()

    async def _connect(self, role: str = "worker") -> Client:
        settings = self.settings
        return await connect(
            settings.nats_url,
            name=f"agentd-{role}-{settings.replica}",
            credentials=_credentials(settings),
            tls=_tls_context(settings.tls_ca_file),
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        nc = await self._connect()
        try:
            self._nc, self._js = nc, nc.jetstream()
            self.status.nc = nc
            consumer = self.subjects.inbox_consumer(self.name)
            psub = await self._js.pull_subscribe_bind(consumer, stream=self.subjects.inbox_stream)
            self._ledger = RunLedger(
                run_ledger(self._js, self.subjects.runs_bucket),
                agent=self.name,
                replica=self.settings.replica,
                lease_s=self._ack_wait_s,
            )
            self._trace = trace = TracePublisher(
                nc, self.subjects, self.name, replica=self.settings.replica, lineage=self._lineage
            )
            self._records = RunRecords(trace)
            self._context = AgentContext(
                nc,
                self.subjects,
                self.name,
                self.settings.replica,
                self.settings.params,
                recorder=trace,
            )
            # ctx.tools() and gateway_tools() (_gateway_tools.py; LangChain imported here)
            from agentd.worker import _gateway_tools

            if self.agent.spec.tools:
                catalog = self.subjects.tool_catalog(self.name)
                self._context.catalog = await _gateway_tools.fetch_catalog(nc, catalog)
            _gateway_tools.install(self._context)
            # before the graph module is imported: its LangChain tools go through the gateway
            govern_local_tools(self._context)
            self._graph = await self._exits.enter_async_context(
                open_graph(
                    self.agent.directory,
                    self.agent.spec.graph,
                    self._context,
                    project=self.agent.project,
                )
            )
            commands = await nc.subscribe(
                self.subjects.command(self.name), cb=self.status.on_command
            )
            async with self._checkpoints(), anyio.create_task_group() as service:
                await service.start(trace.run)
                service.start_soon(self.status.watch_loop, self.settings.heartbeat_s)
                service.start_soon(self._keep_in_progress)
                connect_beats = functools.partial(self._connect, "beats")
                beats = HeartbeatThread(self.status, connect_beats, self.settings.heartbeat_s)
                async with anyio.create_task_group() as runs:
                    await self.status.publish("ready")
                    beats.start()  # after "ready": the first beat is what the ready probe waits for
                    log.info("%s ready (version %s)", self.settings.replica, self.agent.version)
                    task_status.started()
                    try:
                        await self._pull(psub, runs)
                        await self._drain(runs)
                    finally:
                        await anyio.to_thread.run_sync(beats.stop)
                # the runs' records reach the stream before the connection closes
                await trace.close(timeout_s=self.settings.drain_grace_s)
                service.cancel_scope.cancel()
            await commands.unsubscribe()
        finally:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(Exception):  # a factory's context exits (its graph's)
                    await self._exits.aclose()
                # every message is settled by now; drain() would wait out its 30 s timeout on
                # the pull subscription, so flush the acks and close
                with contextlib.suppress(Exception):
                    await nc.flush(timeout=2)
                await nc.close()
            log.info("%s stopped", self.settings.replica)

    @contextlib.asynccontextmanager
    async def _checkpoints(self) -> AsyncIterator[None]:
        """Conversation state that survives restarts (and, in PostgreSQL, hosts), attached
        unless the graph brought its own checkpointer; opened before the replica is ready, so
        a store it cannot reach stops the start."""
        graph = self._graph
        store = self.settings.checkpoints
        wants = self.agent.spec.checkpoint and (
            store.backend == "postgres" or self.settings.state_dir is not None
        )
        if not wants or graph is None or getattr(graph, "checkpointer", None) is not None:
            yield
            return
        async with open_checkpointer(
            store, agent=self.name, state_dir=self.settings.state_dir
        ) as saver:
            graph.checkpointer = saver  # type: ignore[attr-defined]
            yield

    # pulling
    async def _pull(self, psub: Any, runs: TaskGroup) -> None:
        while not self.status.draining.is_set():
            await self.status.resumed.wait()
            free = self.agent.spec.concurrency - self.status.inflight
            if free <= 0 or self.status.draining.is_set():
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
                if not self.status.resumed.is_set() or self.status.draining.is_set():
                    # paused (or draining) while the pull was out: hand it back at once, so the
                    # message waits in the inbox for whoever may take it now
                    with contextlib.suppress(Exception):
                        await msg.nak()
                    continue
                self._accept(msg, runs)

    def _accept(self, msg: Msg, runs: TaskGroup) -> None:
        try:
            message = Message.model_validate_json(msg.data)
        except ValidationError as exc:
            runs.start_soon(self._dead_letter, msg, f"malformed message: {exc}")
            return
        if message.id in self._held:  # a redelivery of a message we still hold: keep ours
            runs.start_soon(self._keep_holding, msg)
            return
        self.status.inflight += 1
        self._held[message.id] = msg
        self._received[message.id] = time.time()
        queue = self._queues.get(message.conversation_id)
        if queue is not None:  # this conversation is running here: wait behind it
            queue.append((msg, message))
            return
        self._queues[message.conversation_id] = deque([(msg, message)])
        runs.start_soon(self._conversation, message.conversation_id)

    async def _conversation(self, conversation: str) -> None:
        """Run a conversation's queued messages in order while holding its lease."""
        assert self._ledger is not None
        queue = self._queues[conversation]
        try:
            delay = LEASE_POLL_S
            # another replica runs this conversation; its lease lives in another process, so
            # there is no local event to wait for: poll, backing off
            while not await self._ledger.acquire(conversation):  # noqa: ASYNC110
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.25)
            while queue:
                msg, message = queue[0]
                await self._run(msg, message)
                queue.popleft()
        finally:
            del self._queues[conversation]
            for msg, message in queue:  # cancelled while draining: hand them back
                with anyio.CancelScope(shield=True):
                    await self._release(msg, message)
            with anyio.CancelScope(shield=True):
                await self._ledger.release(conversation)

    # one run
    async def _run(self, msg: Msg, message: Message) -> None:
        assert self._ledger is not None and self._graph is not None and self._context is not None
        settled = False
        try:
            attempt = msg.metadata.num_delivered if msg.metadata else 1
            # A first delivery of a message younger than the inbox's dedupe window cannot have
            # run before (JetStream stored its id once); anything else asks the ledger.
            fresh = attempt == 1 and time.time() - message.sent_at < self._dedupe_window_s
            finished = None if fresh else await self._ledger.finished(message.id)
            if finished is not None:  # an earlier delivery ran it to completion: do not rerun
                self.status.stats["duplicates"] += 1
                log.info("message %s already ran (run %s)", message.id, finished.run_id)
                await self._settle(msg, message, finished)
                settled = True
                return
            run_attempts = 0  # attempts made by this replica
            while True:
                run = RunInfo(
                    new_id(), message.id, message.conversation_id, message.sender, message.reply_to
                )
                # the router's word on the message (set only by the router), for the graph to read
                run.taint_record = (msg.headers or {}).get("Agentd-Taint") or None
                started = time.monotonic()
                try:
                    # a redelivery, or a retry here, goes on from its own last checkpoint
                    may_have_run = not fresh or run_attempts > 0
                    output = await self._invoke(run, message, attempt, msg.headers, may_have_run)
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    # a failure no retry can fix is dead-lettered now, saying why
                    permanent = permanent_reason(exc)
                    if permanent is not None:
                        error = f"{error} (not retried: {permanent})"
                    self.status.last_error = error
                    self.status.stats["failed"] += 1
                    log.warning("run %s (attempt %d) failed: %s", run.run_id, attempt, error)
                    if attempt >= self._max_deliver or permanent is not None:
                        with anyio.CancelScope(shield=True):
                            await self._dead_letter(msg, error, attempts=attempt)
                            failure = self._result(message, run, started, ok=False, error=error)
                            await self._reply(message, failure)
                        settled = True
                        return
                    await anyio.sleep(min(0.1 * 2**attempt, 5.0))  # retry in place, in order
                    attempt += 1
                    run_attempts += 1
                    continue
                reply = run_reply(output, whole_state=message.whole_state)
                result = self._result(message, run, started, ok=True, output=reply)
                result, ours = await self._ledger.record_finished(message.id, result)
                self.status.stats["completed" if ours else "duplicates"] += 1
                if not run.replied:  # else the graph answered early through ctx.reply()
                    await self._reply(message, result)
                await self._records.stored(run)
                await msg.ack()
                settled = True
                return
        finally:
            if not settled:  # cancelled while draining: hand it back for another replica
                with anyio.CancelScope(shield=True):
                    await self._release(msg, message)
            else:
                self._forget(message)

    async def _invoke(
        self,
        run: RunInfo,
        message: Message,
        attempt: int,
        headers: dict[str, str] | None,
        may_have_run: bool = False,
    ) -> Any:
        assert self._graph is not None and self._context is not None
        if self._graph_input is None:
            self._graph_input = GraphInput.of(self._graph)
        token = self._context._enter(run)
        try:
            # the sender's span (kept by the router in the inbox message) is this run's parent
            with invoke_agent_span(
                self.name,
                conversation_id=message.conversation_id,
                run_id=run.run_id,
                message_id=message.id,
                sender=message.sender,
                replica=self.settings.replica,
                parent=extract_context(headers),
                agent_version=self.agent.version,
                payload=message.payload,
            ) as span:
                # inside the span, so the run's records carry its trace and span ids
                started = self._records.started(
                    run, message_id=message.id, sender=message.sender, attempt=attempt
                )
                try:
                    with anyio.fail_after(self.agent.spec.run_timeout_s):
                        output, resumed = await run_message(
                            self._graph, self._graph_input, message, agent=self.name,
                            may_have_run=may_have_run,
                        )  # fmt: skip
                        await settle_local_tools()  # its tools' outcomes are stored
                except Exception as exc:
                    self._records.failed(run, started, error=f"{type(exc).__name__}: {exc}")
                    raise
                except BaseException:  # cancelled: the replica is draining, the message goes back
                    self._records.failed(run, started, error=None)
                    raise
                set_agent_output(span, output)
                self._records.finished(run, started, resumed=resumed)
                return output
        finally:
            self._context._exit(token)

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
            agent=self.name,
            replica=self.settings.replica,
            output=output,
            error=error,
            duration_s=time.monotonic() - started,
            received_at=self._received.get(message.id),
        )

    # settling messages
    async def _settle(self, msg: Msg, message: Message, result: RunResult) -> None:
        await self._reply(message, result)
        await msg.ack()

    async def _reply(self, message: Message, result: RunResult) -> None:
        if message.reply_to and self._nc is not None:
            await self._nc.publish(message.reply_to, result.to_json())

    async def _release(self, msg: Msg, message: Message) -> None:
        with contextlib.suppress(Exception):
            await msg.nak()
        self._forget(message)

    def _forget(self, message: Message) -> None:
        self._received.pop(message.id, None)
        if self._held.pop(message.id, None) is not None:
            self.status.inflight -= 1
            self._settled.set()
            self._settled = anyio.Event()

    async def _keep_holding(self, msg: Msg) -> None:
        """JetStream redelivered a message this replica still works on (its ack_wait ran out):
        say so, and let the run in hand settle it."""
        with contextlib.suppress(Exception):
            await msg.in_progress()

    async def _dead_letter(self, msg: Msg, error: str, *, attempts: int = 1) -> None:
        assert self._nc is not None
        if await give_up(self._nc, self.subjects, self.name, msg, error, attempts=attempts):
            self.status.stats["dead_lettered"] += 1

    async def _drain(self, runs: TaskGroup) -> None:
        """Wait for runs in flight up to the grace period, then cancel (they nak themselves)."""
        log.info("%s draining: %d run(s) in flight", self.settings.replica, self.status.inflight)
        await self.status.publish("draining")
        with anyio.move_on_after(self.settings.drain_grace_s):
            while self.status.inflight:
                await self._settled.wait()
        runs.cancel_scope.cancel()

    # keeping held messages and leases alive, heartbeats, commands
    async def _keep_in_progress(self) -> None:
        """Tell JetStream that held messages are still being worked on (long and queued runs),
        and renew the conversation leases this replica holds."""
        assert self._ledger is not None
        while True:
            await anyio.sleep(max(self._ack_wait_s / 3, 0.1))
            for msg in list(self._held.values()):
                with contextlib.suppress(Exception):
                    await msg.in_progress()
            for conversation in self._ledger.held:
                with contextlib.suppress(Exception):
                    await self._ledger.renew(conversation)


def _credentials(settings: WorkerSettings) -> Credentials | None:
    if settings.creds_json is not None:
        return Credentials.from_json(settings.creds_json, source="AGENTD_CREDS_JSON")
    return Credentials.load(settings.creds_file) if settings.creds_file else None
