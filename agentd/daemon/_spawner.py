"""Agents created at run time by other agents: `ctx.spawn(agent, params)` in a graph.

An agent asks on `agentd.spawn.<itself>` (the subject names who asks) for an instance of another
agent's spec with parameters; the instance gets its own name, inbox and replica, and the asker
can `ask`/`send` it by that name. Bounded by the asker's `spawn_quota` and the daemon's
`[agents].max_spawned`; an instance ends once it has been idle for its `idle_timeout_s`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentd.bus import Subjects, serve_each
from agentd.config import AgentsConfig
from agentd.daemon._fleet import AgentFleet, AgentRecord
from agentd.daemon._recorder import Recorder
from agentd.errors import ControlError

__all__ = ["Spawner"]

log = logging.getLogger("agentd.fleet")


class Spawner:
    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        fleet: AgentFleet,
        cfg: AgentsConfig,
        recorder: Recorder,
        *,
        reap_every_s: float = 1.0,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._fleet = fleet
        self._cfg = cfg
        self._recorder = recorder
        self._reap_every_s = reap_every_s
        self._idle_since: dict[str, float] = {}
        self._stopped = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with serve_each(self._nc, self._subjects.spawn("*"), self._answer):
            task_status.started()
            while not self._stopped.is_set():
                with anyio.move_on_after(self._reap_every_s):
                    await self._stopped.wait()
                await self.reap_idle()

    async def shutdown(self) -> None:
        self._stopped.set()

    async def _answer(self, msg: Msg) -> None:
        by = msg.subject.rsplit(".", 1)[-1]
        try:
            try:
                request = json.loads(msg.data)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                raise ControlError(
                    "bad_request", f"spawn request is not valid JSON: {exc}"
                ) from None
            if not isinstance(request, dict) or not isinstance(request.get("agent"), str):
                raise ControlError("bad_request", "spawn needs {'agent': NAME, 'params': {...}}")
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise ControlError("bad_request", "spawn params must be a JSON object")
            name = await self.spawn(request["agent"], by, params)
            reply: dict[str, Any] = {"ok": True, "agent": name}
        except ControlError as exc:
            reply = {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except ValueError as exc:
            reply = {"ok": False, "error": {"code": "bad_request", "message": str(exc)}}
        if msg.reply:
            await msg.respond(json.dumps(reply).encode())

    async def spawn(self, template: str, by: str, params: dict[str, Any]) -> str:
        """Start an instance of agent `template` for agent `by`; returns the instance's name."""
        spec = self._fleet.get(template).agent
        parent = self._fleet.agents.get(by)
        quota = parent.agent.spec.spawn_quota if parent else 0
        mine = [r for r in self._fleet.agents.values() if r.spawned_by == by]
        if len(mine) >= quota:
            raise ControlError(
                "quota", f"{by} may run {quota} spawned agent(s) at once and has {len(mine)}"
            )
        spawned = [r for r in self._fleet.agents.values() if r.spawned_by]
        if len(spawned) >= self._cfg.max_spawned:
            raise ControlError(
                "quota", f"this daemon runs at most {self._cfg.max_spawned} spawned agents"
            )
        name = f"{template[:40]}-s{time.time_ns() % 10**9:09d}"
        self._recorder.record(
            "agent.spawned",
            agent=name,
            decision="spawned",
            reason=f"spawned by {by}",
            inputs={"template": template, "params": params},
            lineage={"agent_version": spec.version},
        )
        record = AgentRecord(spec, name, 0, spawned_by=by, params=params)
        await self._fleet.add(record, 1)
        if not record.replicas:
            await self._fleet.remove(name)
            raise ControlError("spawn_failed", f"{name} did not start: {record.error}")
        self._idle_since[name] = time.monotonic()
        return name

    async def reap_idle(self) -> list[str]:
        """End spawned agents idle (nothing running, nothing waiting) for idle_timeout_s."""
        ended = []
        now = time.monotonic()
        for name, record in list(self._fleet.agents.items()):
            if record.spawned_by is None:
                continue
            backlog = await self._fleet.backlog(name)
            if self._fleet.inflight(name) or backlog["pending"] or backlog["unacked"]:
                self._idle_since[name] = now
                continue
            if name not in self._idle_since:  # still starting: spawn() starts its idle clock
                continue
            idle_s = now - self._idle_since[name]
            if idle_s >= record.agent.spec.idle_timeout_s:
                log.info("ending spawned agent %s: idle for %.0fs", name, idle_s)
                await self._fleet.remove(name)
                self._idle_since.pop(name, None)
                self._recorder.record(
                    "agent.exited", agent=name, decision="ended", reason=f"idle for {idle_s:.0f}s"
                )
                ended.append(name)
        return ended
