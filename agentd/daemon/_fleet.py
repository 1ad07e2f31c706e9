"""The fleet: every agent's replicas, spawned through the generic supervisor.

The supervisor knows only processes; the fleet knows agents. It turns specs into child specs,
scales agents (stopping a replica drains it first: SIGTERM, runs finish, the rest go back to the
inbox), pauses and resumes them, spawns agents at run time for other agents, and answers `ps`.
Every change is a decision record with its reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from agentd.bus import Subjects, ensure_inbox_consumer
from agentd.cluster import AgentDemand
from agentd.config import Config, LoadedAgent, load_agents
from agentd.daemon._heartbeats import HeartbeatTracker
from agentd.daemon._ps import ps_rows, replica_index
from agentd.daemon._recorder import Recorder
from agentd.daemon._replica_spec import replica_env, replica_spec
from agentd.daemon._sandbox import (
    agent_paths,
    agent_sandbox_problems,
    host_abi,
    prepare_replica_dirs,
    replica_plan,
)
from agentd.daemon._uids import UidBook
from agentd.errors import AgentdError, ControlError, SpecError, WorkerCrashed
from agentd.gateway import LLMGateway
from agentd.supervisor import ChildSpec, ChildState, Supervisor, backoff_delay

__all__ = ["AgentFleet", "AgentRecord"]

log = logging.getLogger("agentd.fleet")


@dataclass
class AgentRecord:
    """What the fleet knows about one agent."""

    agent: LoadedAgent
    name: str
    desired: int
    replicas: set[str] = field(default_factory=set)
    state: str = "running"  # running | paused | stopped
    error: str | None = None
    spawned_by: str | None = None
    params: dict[str, Any] | None = None
    sandbox: dict[str, Any] | None = None
    """The sandbox its replicas run under (SandboxPlan.summary()); None: [sandbox].mode off."""
    pinned_by: str | None = None
    """The operator whose manual scale took the count from the autoscaler (_scale_owner)."""


class AgentFleet:
    """Spawns, scales and tracks agent replicas. `run()` starts every enabled agent."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        supervisor: Supervisor,
        config: Config,
        nats_url: str,
        recorder: Recorder,
        *,
        issue_credentials: Callable[[str], Awaitable[Path]] | None = None,
        revoke_credentials: Callable[[str], Awaitable[None]] | None = None,
        llm: LLMGateway | None = None,
    ) -> None:
        self._nc = nc
        # NATS credentials for an agent's replicas (agentd.identity); None: no auth
        self._issue_credentials = issue_credentials
        self._revoke_credentials = revoke_credentials
        # issues each replica a token at spawn, revoked when the replica stops
        self._llm = llm
        self._js = js
        self._supervisor = supervisor
        self._config = config
        self._nats_url = nats_url
        self._recorder = recorder
        self._subjects = Subjects(config.bus.prefix)
        self.heartbeats = HeartbeatTracker(config.agents.heartbeat_s)
        self.agents: dict[str, AgentRecord] = {}
        self.spec_errors: list[str] = []
        self._locks: dict[str, anyio.Lock] = {}
        self._stopped = anyio.Event()
        # In a cluster the placer decides where replicas run (agentd.cluster): the fleet starts
        # none by itself, and `scale` asks the cluster for a new desired count.
        self.desire: Callable[[str, int], Awaitable[int]] | None = None
        self._sandbox_abi = host_abi() if config.sandbox.mode != "off" else 0
        self._uids = UidBook(config)  # a uid per agent, when the daemon may switch users

    @property
    def names(self) -> set[str]:
        return set(self.agents)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sub = await self._nc.subscribe(self._subjects.heartbeat_all, cb=self.heartbeats.on_message)
        try:
            loaded, errors = load_agents(self._config.agents.dir, self._config.agents.enabled)
            for err in errors:
                log.error("agent not started: %s", err)
                self.spec_errors.append(str(err))
            for agent in list(loaded):
                if problems := agent_sandbox_problems(self._config, agent):
                    err = SpecError(str(agent.spec_path), problems)
                    log.error("agent not started: %s", err)
                    self.spec_errors.append(str(err))
                    loaded.remove(agent)
            for agent in loaded:
                self.agents[agent.name] = AgentRecord(agent, agent.name, 0)
            async with anyio.create_task_group() as tg:
                for agent in loaded:
                    count = agent.spec.replicas.initial if self.desire is None else 0
                    tg.start_soon(self.start_agent, agent.name, count)
            task_status.started()
            await self._stopped.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def shutdown(self) -> None:
        """Stop every replica of every agent at once, each draining within its grace."""
        async with anyio.create_task_group() as tg:
            for record in self.agents.values():
                for replica in list(record.replicas):
                    tg.start_soon(self._stop_replica, record, replica)
        self._stopped.set()

    # operator and autoscaler actions
    def get(self, name: str) -> AgentRecord:
        record = self.agents.get(name)
        if record is None:
            raise ControlError(
                "unknown_agent", f"no agent named {name!r}", agents=sorted(self.agents)
            )
        return record

    async def scale(self, name: str, count: int, *, reason: str, **inputs: Any) -> int:
        """Run `count` replicas of `name` (0..max). Returns the previous count."""
        record = self.get(name)
        bounds = record.agent.spec.replicas
        if not 0 <= count <= bounds.max:
            raise ControlError(
                "out_of_bounds",
                f"{name} runs 0 to {bounds.max} replicas (replicas.max); got {count}",
            )
        if self.desire is not None and record.spawned_by is None:
            before = await self.desire(name, count)
            reason += " (cluster-wide desired count; the placer places them)"
            self._record_scaled(record, before, count, reason, inputs)
            return before
        async with self._lock(name):
            before = len(record.replicas)
            record.desired = count
            kept = sorted(record.replicas, key=replica_index)[:count]
            free = [f"{name}-{i}" for i in range(bounds.max) if f"{name}-{i}" not in kept]
            await self._run_exactly(record, {*kept, *free[: count - len(kept)]})
            if count != before:
                if count == 0:
                    record.state = "stopped"
                elif record.state == "stopped":
                    record.state = "running"
                self._record_scaled(record, before, count, reason, inputs)
                await self._event("scale", agent=name, before=before, after=count, reason=reason)
        return before

    def _record_scaled(
        self, record: AgentRecord, before: int, after: int, reason: str, inputs: dict[str, Any]
    ) -> None:
        self._recorder.record(
            "agent.scaled",
            agent=record.name,
            decision=f"{before}->{after}",
            reason=reason,
            inputs=inputs or None,
            lineage={"agent_version": record.agent.version},
        )

    async def _run_exactly(
        self, record: AgentRecord, replicas: set[str]
    ) -> tuple[list[str], list[str]]:
        """Start the replicas of `replicas` not running and stop the others, all at once;
        returns (started, stopped). The caller holds the agent's lock."""
        start = sorted(replicas - record.replicas, key=replica_index)
        stop = sorted(record.replicas - replicas, key=replica_index)
        async with anyio.create_task_group() as tg:
            for replica in start:
                tg.start_soon(self._start_replica, record, replica)
            for replica in stop:
                tg.start_soon(self._stop_replica, record, replica)
        return start, stop

    # the cluster's hooks (agentd.cluster.PlacedFleet)
    def demands(self) -> dict[str, AgentDemand]:
        """The agents the cluster places: those from the agents folder (an instance spawned at
        run time stays on the host that spawned it)."""
        return {
            name: AgentDemand(
                name,
                record.agent.spec.replicas.initial,
                record.agent.spec.replicas.max,
                record.agent.spec.model_pool,
            )
            for name, record in self.agents.items()
            if record.spawned_by is None
        }

    def local_replicas(self, name: str) -> set[str]:
        return set(self.agents[name].replicas)

    def all_replicas(self) -> set[str]:
        # a stopping replica leaves `replicas` only once its process has exited (drained)
        return {n for r in self.agents.values() if r.spawned_by is None for n in r.replicas}

    async def place(self, name: str, replicas: set[str]) -> tuple[list[str], list[str]]:
        """Run exactly `replicas` of `name` on this host (the cluster's placement)."""
        record = self.get(name)
        async with self._lock(name):
            start, stop = await self._run_exactly(record, replicas)
            record.desired = len(replicas)
            if replicas and record.state in {"stopped", "failed"}:
                record.state = "running"
        return start, stop

    async def restart(self, name: str) -> list[str]:
        """Restart every replica of `name`, one after another, so the agent keeps serving."""
        record = self.get(name)
        restarted = []
        async with self._lock(name):
            for replica in sorted(record.replicas, key=replica_index):
                await self._supervisor.restart(replica)
                restarted.append(replica)
        return restarted

    async def pause(self, name: str) -> None:
        """Drain: replicas finish what they hold and take no new work until resumed."""
        record = self.get(name)
        record.state = "paused"
        await self._nc.publish(self._subjects.command(name), json.dumps({"verb": "pause"}).encode())

    async def resume(self, name: str) -> None:
        record = self.get(name)
        record.state = "running" if record.replicas else record.state
        await self._nc.publish(
            self._subjects.command(name), json.dumps({"verb": "resume"}).encode()
        )

    async def start(self, name: str) -> list[str]:
        """Resume a paused agent, revive replicas the supervisor gave up on (past their restart
        intensity: FAILED), or start a stopped or failed agent; returns the revived replicas.
        Raises ControlError naming the replica when one still does not come up."""
        record = self.get(name)
        if record.state == "paused":
            await self.resume(name)
        revived: list[str] = []
        async with self._lock(name):
            for replica in sorted(record.replicas, key=replica_index):
                if self._state(replica) != ChildState.FAILED:
                    continue
                try:  # a fresh restart intensity, as `restart` gives
                    await self._supervisor.restart(replica)
                except WorkerCrashed as exc:
                    await self._stop_replica(record, replica)
                    record.state, record.error = "failed", str(exc)
                    raise ControlError(
                        "start_failed",
                        f"{replica} was revived but did not come up: {exc}; "
                        f"see `agentctl logs {name}`",
                    ) from None
                revived.append(replica)
        if record.state == "failed":
            record.state, record.error = "running", None
        if not record.replicas:
            spec = record.agent.spec.replicas
            await self.scale(name, max(spec.min, spec.initial, 1), reason="operator start")
        return revived

    def _state(self, replica: str) -> ChildState | None:
        try:
            return self._supervisor.info(replica).state
        except KeyError:
            return None

    async def backlog(self, name: str) -> dict[str, int]:
        """Messages waiting (pending) and being worked on (unacked) in `name`'s inbox."""
        try:
            info = await self._js.consumer_info(
                self._subjects.inbox_stream, self._subjects.inbox_consumer(name)
            )
        except NotFoundError:
            return {"pending": 0, "unacked": 0}
        return {"pending": info.num_pending or 0, "unacked": info.num_ack_pending or 0}

    async def add(self, record: AgentRecord, count: int) -> None:
        """Add an agent created at run time (a spawned instance) and start `count` replicas."""
        self.agents[record.name] = record
        await self.start_agent(record.name, count)

    async def remove(self, name: str) -> None:
        """Stop an agent's replicas, delete its inbox consumer and forget it."""
        await self.scale(name, 0, reason="removed")
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(
                self._subjects.inbox_stream, self._subjects.inbox_consumer(name)
            )
        self.agents.pop(name, None)
        if self._revoke_credentials is not None:  # a spawned instance's identity ends with it
            await self._revoke_credentials(name)

    def inflight(self, name: str) -> int:
        record = self.get(name)
        return sum(
            self.heartbeats.latest(r, self._pid(r)).get("inflight", 0) for r in record.replicas
        )

    # replicas
    async def start_agent(self, name: str, count: int) -> None:
        record = self.agents[name]
        agent = record.agent
        try:
            await ensure_inbox_consumer(
                self._js,
                self._subjects,
                name,
                ack_wait_s=self._config.inbox.ack_wait_s,
                max_deliver=agent.spec.max_deliveries or self._config.inbox.max_deliver,
            )
            if self.desire is None or record.spawned_by is not None:
                await self.scale(name, count, reason="startup")
        except (AgentdError, OSError) as exc:
            record.error = str(exc)
            log.error("agent %s failed to start: %s", name, exc)

    async def _start_replica(self, record: AgentRecord, replica: str) -> None:
        """Start a replica; one that dies before it is ready is retried under the agent's
        restart policy, and after max_restarts the agent is marked failed."""
        policy = record.agent.spec.restart
        record.replicas.add(replica)
        self.heartbeats.expect(replica)
        creds = None
        if self._issue_credentials is not None:
            creds = await self._issue_credentials(record.name)
        for attempt in range(policy.max_restarts + 1):
            spec = self._child_spec(record, replica, creds)
            try:
                info = await self._supervisor.start(spec)
            except WorkerCrashed as exc:
                record.error = str(exc)
                log.error("replica %s did not start (attempt %d): %s", replica, attempt + 1, exc)
                await anyio.sleep(backoff_delay(spec.restart, attempt + 1))
                continue
            log.info(
                "replica %s ready (pid %s, version %s)", replica, info.pid, record.agent.version
            )
            return
        record.replicas.discard(replica)
        self.heartbeats.forget(replica)
        if self._llm is not None:
            self._llm.revoke(replica)
        record.state = "failed"
        self._recorder.record(
            "agent.failed",
            agent=record.name,
            replica=replica,
            decision="failed",
            reason=f"did not start in {policy.max_restarts + 1} attempts: {record.error}",
            lineage={"agent_version": record.agent.version},
        )
        await self._event("failed", agent=record.name, child=replica, reason=record.error)

    async def _stop_replica(self, record: AgentRecord, replica: str) -> None:
        try:
            await self._supervisor.stop(replica, grace_s=self._config.daemon.drain_grace_s)
        except KeyError:
            pass
        finally:
            record.replicas.discard(replica)
            self.heartbeats.forget(replica)
            if self._llm is not None:
                self._llm.revoke(replica)

    def _child_spec(
        self, record: AgentRecord, replica: str, creds: Path | None = None
    ) -> ChildSpec:
        env = replica_env(
            self._config,
            record.agent,
            record.name,
            replica,
            nats_url=self._nats_url,
            params=record.params,
            creds=creds,
            llm=self._llm,
        )
        plan = None
        if self._config.sandbox.mode != "off":
            scratch, checkpoints = prepare_replica_dirs(
                self._config, record.name, checkpoint=record.agent.spec.checkpoint
            )
            env |= {"AGENTD_SCRATCH_DIR": str(scratch), "TMPDIR": str(scratch)}
            uid = self._uids.uid_of(record.name)
            if uid is not None:
                self._uids.hand_over(uid, scratch, checkpoints)
                box = record.agent.spec.sandbox
                self._uids.grant_declared(
                    uid,
                    record.agent,
                    agent_paths(record.agent, box.read),
                    agent_paths(record.agent, box.write),
                )
                env["HOME"] = str(scratch)  # the daemon's home is not the replica's
            plan = replica_plan(
                self._config,
                record.agent,
                env,
                abi=self._sandbox_abi,
                scratch=scratch,
                checkpoints=checkpoints,
                uid=uid,
            )
            record.sandbox = plan.summary()
        return replica_spec(
            self._config, record.agent, record.name, replica, env, self.heartbeats, plan
        )

    # views
    async def ps(self) -> list[dict[str, Any]]:
        """Every agent with its replicas, their state, load and errors (`agentctl ps`)."""
        return await ps_rows(
            self.agents,
            self._supervisor,
            self.heartbeats,
            self.backlog,
            autoscale=self._config.autoscale,
        )

    def logs_of(self, name: str) -> list[str]:
        record = self.get(name)
        return sorted(record.replicas, key=replica_index)

    async def _event(self, kind: str, **body: Any) -> None:
        try:
            await self._nc.publish(self._subjects.event(kind), json.dumps(body).encode())
        except Exception as exc:
            log.debug("event not published: %s", exc)

    def _lock(self, name: str) -> anyio.Lock:
        return self._locks.setdefault(name, anyio.Lock())

    def _pid(self, replica: str) -> int | None:
        try:
            return self._supervisor.info(replica).pid
        except KeyError:
            return None
