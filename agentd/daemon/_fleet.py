"""The fleet: every configured agent's replicas, spawned through the generic supervisor.

The supervisor knows only processes; the fleet knows agents. It turns specs into child specs,
tracks replicas' heartbeats (their readiness and liveness probes), and answers `ps`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from agentd.bus import Subjects, ensure_inbox_consumer
from agentd.config import Config, LoadedAgent, load_agents
from agentd.errors import AgentdError, WorkerCrashed
from agentd.supervisor import ChildInfo, ChildSpec, RestartPolicy, RestartType, Supervisor
from agentd.worker import WorkerSettings

__all__ = ["AgentFleet"]

log = logging.getLogger("agentd.fleet")

# a replica that misses this many heartbeats in a row is hung: killed and restarted
MISSED_BEATS = 3


@dataclass
class _Beat:
    pid: int
    at: float
    data: dict[str, Any]


@dataclass
class _AgentState:
    agent: LoadedAgent
    replicas: list[str] = field(default_factory=list)
    failed: bool = False
    error: str | None = None


class AgentFleet:
    """Spawns and tracks agent replicas. `run()` starts every enabled agent, then serves."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        supervisor: Supervisor,
        config: Config,
        nats_url: str,
    ) -> None:
        self._nc = nc
        self._js = js
        self._supervisor = supervisor
        self._config = config
        self._nats_url = nats_url
        self._subjects = Subjects(config.bus.prefix)
        self._agents: dict[str, _AgentState] = {}
        self._spec_errors: list[str] = []
        self._beats: dict[str, _Beat] = {}
        self._beat_arrived = anyio.Event()
        self._stopped = anyio.Event()
        self._bus_up_since: float | None = time.monotonic()

    @property
    def names(self) -> set[str]:
        return set(self._agents)

    @property
    def spec_errors(self) -> list[str]:
        return list(self._spec_errors)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        sub = await self._nc.subscribe(self._subjects.heartbeat_all, cb=self._on_beat)
        try:
            loaded, errors = load_agents(self._config.agents.dir, self._config.agents.enabled)
            for err in errors:
                log.error("agent not started: %s", err)
                self._spec_errors.append(str(err))
            for agent in loaded:
                self._agents[agent.name] = _AgentState(agent)
            async with anyio.create_task_group() as tg:
                for agent in loaded:
                    tg.start_soon(self._start_agent, agent)
            task_status.started()
            await self._stopped.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await sub.unsubscribe()

    async def shutdown(self) -> None:
        """Stop every replica (drain, SIGTERM, SIGKILL after grace), all agents at once."""
        async with anyio.create_task_group() as tg:
            for state in self._agents.values():
                for replica in list(state.replicas):
                    tg.start_soon(self._stop_replica, state, replica)
        self._stopped.set()

    async def _start_agent(self, agent: LoadedAgent) -> None:
        state = self._agents[agent.name]
        try:
            await ensure_inbox_consumer(
                self._js,
                self._subjects,
                agent.name,
                ack_wait_s=self._config.inbox.ack_wait_s,
                max_deliver=agent.spec.max_deliveries or self._config.inbox.max_deliver,
            )
            async with anyio.create_task_group() as tg:
                for index in range(agent.spec.replicas.initial):
                    tg.start_soon(self._start_replica, state, f"{agent.name}-{index}")
        except (AgentdError, OSError) as exc:
            state.failed, state.error = True, str(exc)
            log.error("agent %s failed to start: %s", agent.name, exc)

    async def _start_replica(self, state: _AgentState, replica: str) -> None:
        spec = self._child_spec(state.agent, replica)
        state.replicas.append(replica)
        try:
            info = await self._supervisor.start(spec)
        except WorkerCrashed as exc:
            state.replicas.remove(replica)
            state.failed, state.error = True, str(exc)
            log.error("replica %s did not start: %s", replica, exc)
            return
        log.info("replica %s ready (pid %s, version %s)", replica, info.pid, state.agent.version)

    async def _stop_replica(self, state: _AgentState, replica: str) -> None:
        try:
            await self._supervisor.stop(replica, grace_s=self._config.daemon.drain_grace_s)
        except KeyError:
            pass
        finally:
            if replica in state.replicas:
                state.replicas.remove(replica)

    def _child_spec(self, agent: LoadedAgent, replica: str) -> ChildSpec:
        cfg = self._config
        settings = WorkerSettings(
            agent=agent.name,
            replica=replica,
            agent_dir=agent.directory,
            nats_url=self._nats_url,
            prefix=cfg.bus.prefix,
            heartbeat_s=cfg.agents.heartbeat_s,
            drain_grace_s=cfg.daemon.drain_grace_s,
            state_dir=cfg.daemon.state_dir,
        )
        restart = agent.spec.restart
        return ChildSpec(
            name=replica,
            argv=[sys.executable, "-m", "agentd.worker", "--agent", agent.name],
            env={**agent.spec.env, **settings.to_env(), "PYTHONUNBUFFERED": "1"},
            cwd=agent.directory,
            restart=RestartPolicy(
                type=RestartType(restart.type),
                max_restarts=restart.max_restarts,
                window_s=restart.window_s,
                backoff_initial_s=restart.backoff_initial_s,
                backoff_max_s=restart.backoff_max_s,
            ),
            stop_grace_s=cfg.daemon.drain_grace_s,
            ready=self._wait_ready,
            ready_timeout_s=cfg.agents.ready_timeout_s,
            liveness=self._is_alive,
            liveness_interval_s=cfg.agents.heartbeat_s,
            liveness_timeout_s=cfg.agents.heartbeat_s,
            liveness_failures=1,
            log_path=cfg.daemon.state_dir / "logs" / f"{replica}.log",
        )

    # heartbeats: the replicas' readiness and liveness
    async def _on_beat(self, msg: Msg) -> None:
        try:
            beat = json.loads(msg.data)
            replica, pid = str(beat["replica"]), int(beat["pid"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed heartbeat on %s", msg.subject)
            return
        self._beats[replica] = _Beat(pid, time.monotonic(), beat)
        self._beat_arrived.set()
        self._beat_arrived = anyio.Event()

    async def _wait_ready(self, info: ChildInfo) -> None:
        while True:
            beat = self._beats.get(info.name)
            if beat is not None and beat.pid == info.pid:
                return
            await self._beat_arrived.wait()

    def bus_down(self) -> None:
        """Heartbeats travel over NATS: while it is down, silence proves nothing."""
        self._bus_up_since = None

    def bus_up(self) -> None:
        self._bus_up_since = time.monotonic()

    async def _is_alive(self, info: ChildInfo) -> bool:
        window = self._config.agents.heartbeat_s * MISSED_BEATS
        if self._bus_up_since is None or time.monotonic() - self._bus_up_since < window:
            return True
        beat = self._beats.get(info.name)
        if beat is None or beat.pid != info.pid:
            return False
        return time.monotonic() - beat.at < window

    # views
    def ps(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        now = time.time()
        for name, state in sorted(self._agents.items()):
            replicas = []
            for replica in state.replicas:
                try:
                    info = self._supervisor.info(replica)
                except KeyError:
                    continue
                beat = self._beats.get(replica)
                live = beat.data if beat and beat.pid == info.pid else {}
                replicas.append(
                    {
                        "name": replica,
                        "pid": info.pid,
                        "state": str(info.state),
                        "uptime_s": round(now - info.started_at, 1) if info.started_at else None,
                        "restarts": info.restarts,
                        "inflight": live.get("inflight", 0),
                        "completed": live.get("completed", 0),
                        "last_error": live.get("last_error") or info.last_error,
                    }
                )
            rows.append(
                {
                    "agent": name,
                    "version": state.agent.version,
                    "description": state.agent.spec.description,
                    "desired": state.agent.spec.replicas.initial,
                    "failed": state.failed,
                    "error": state.error,
                    "replicas": replicas,
                }
            )
        return rows
