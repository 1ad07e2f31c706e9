"""Agents created at run time by other agents: `ctx.spawn(agent, params)` in a graph.

An agent asks on `agentd.spawn.<itself>` (the subject names who asks) for an instance of another
agent's spec with parameters; the instance gets its own name, inbox and replica, and the asker
can `ask`/`send` it by that name. Decided by policy like every other action (`<asker>`,
`agent:<template>`, `spawn`; the decision is recorded either way), then bounded by the asker's
`spawn_quota` and the daemon's `[agents].max_spawned`; an instance ends once it has been idle
for its `idle_timeout_s`. The request is parsed within bounds (size, nesting depth), and any
failure is answered as an error: one request never stops the spawner.
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

from agentd.bus import BoundedJSONError, Subjects, loads_bounded, serve_each
from agentd.config import AgentsConfig
from agentd.daemon._fleet import AgentFleet, AgentRecord
from agentd.daemon._recorder import Recorder
from agentd.errors import AgentdError, ControlError
from agentd.router import AllowAll, PolicyHook
from agentd.tools import TaintBook

__all__ = ["Spawner"]

log = logging.getLogger("agentd.fleet")

MAX_SPAWN_REQUEST_BYTES = 64 * 1024


class Spawner:
    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        fleet: AgentFleet,
        cfg: AgentsConfig,
        recorder: Recorder,
        *,
        policy: PolicyHook | None = None,
        reap_every_s: float = 1.0,
        taint: TaintBook | None = None,
    ) -> None:
        self._taint = taint
        self._policy: PolicyHook = policy or AllowAll()
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
                request = loads_bounded(
                    msg.data,
                    what=f"the spawn request on {msg.subject}",
                    max_bytes=MAX_SPAWN_REQUEST_BYTES,
                )
            except BoundedJSONError as exc:
                raise ControlError("bad_request", str(exc)) from None
            if not isinstance(request, dict) or not isinstance(request.get("agent"), str):
                raise ControlError("bad_request", "spawn needs {'agent': NAME, 'params': {...}}")
            params = request.get("params") or {}
            if not isinstance(params, dict):
                raise ControlError("bad_request", "spawn params must be a JSON object")
            name = await self.spawn(request["agent"], by, params)
            reply: dict[str, Any] = {"ok": True, "agent": name}
        except ControlError as exc:
            reply = {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except (ValueError, AgentdError) as exc:
            reply = {"ok": False, "error": {"code": "bad_request", "message": str(exc)}}
        except Exception as exc:  # a bug must not end the spawner (and the daemon with it)
            log.exception("spawn request on %s failed", msg.subject)
            message = f"the spawn failed inside the daemon: {type(exc).__name__}: {exc}"
            reply = {"ok": False, "error": {"code": "internal", "message": message}}
        if msg.reply:
            try:
                await msg.respond(json.dumps(reply, default=str).encode())
            except Exception:
                log.warning("could not answer the spawn request on %s", msg.subject)

    async def spawn(self, template: str, by: str, params: dict[str, Any]) -> str:
        """Start an instance of agent `template` for agent `by`; returns the instance's name.
        Raises ControlError: policy_denied, quota, spawn_failed, or the fleet's unknown agent."""
        answer = self._policy.check(by, f"agent:{template}", "spawn")
        if not answer.allowed:
            self._recorder.record(
                "agent.spawned",
                agent=by,
                decision="refused",
                rule=answer.rule,
                reason=answer.reason or f"policy does not let {by} spawn {template}",
                inputs={"template": template, "params": params},
                lineage={"policy_version": answer.policy_version},
            )
            raise ControlError(
                "policy_denied",
                f"{by} may not spawn {template}: {answer.reason or answer.rule}",
            )
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
        # a tainted asker's params may carry what it read: the instance inherits the taint
        taint = self._taint.of_call(by, None, None) if self._taint else None
        if taint is not None and self._taint is not None:
            await self._taint.taint_spawned(name, taint)
        self._recorder.record(
            "agent.spawned",
            agent=name,
            decision="spawned",
            reason=f"spawned by {by}",
            rule=answer.rule,
            inputs={"template": template, "params": params},
            lineage={"agent_version": spec.version, "policy_version": answer.policy_version},
            tainted=taint is not None,
            **(taint.fields() if taint is not None else {}),
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
