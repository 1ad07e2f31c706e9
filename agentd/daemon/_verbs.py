"""The daemon's control verbs: what `agentctl` can ask on `agentd.ctl.<verb>`.

Every verb that changes something is recorded as a `control.command` decision naming the
operator who gave it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import agentd
from agentd.bus import Message
from agentd.cluster import Cluster
from agentd.config import AutoscaleConfig
from agentd.control import ControlPlane, ControlRequest
from agentd.daemon._authority import Authority
from agentd.daemon._fleet import AgentFleet
from agentd.daemon._recorder import Recorder
from agentd.daemon._scale_owner import count_owner, pin_count, record_pin, release_count
from agentd.errors import ConfigError, ControlError
from agentd.inference import ModelPools, PlacementError
from agentd.router import DeadLetters, Router
from agentd.tools import ToolGateway

__all__ = ["ControlVerbs"]

MAX_LOG_CHUNK_BYTES = 256 * 1024


def _arg(request: ControlRequest, name: str, kind: type, default: Any = ...) -> Any:
    value = request.args.get(name, default)
    if value is ...:
        raise ControlError("bad_request", f"missing argument {name!r}")
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ControlError("bad_request", f"argument {name!r} must be a {kind.__name__}")
    return value


def _read_log(path: Path, offset: int | None, lines: int) -> tuple[list[str], int]:
    """The last `lines` lines of a log (offset None), or what follows `offset`."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    with path.open("rb") as f:
        if offset is None:
            f.seek(max(0, size - MAX_LOG_CHUNK_BYTES))
            return f.read().decode(errors="replace").splitlines()[-lines:], size
        start = 0 if offset > size else offset  # a smaller file was rotated: read it all
        f.seek(start)
        data = f.read(MAX_LOG_CHUNK_BYTES)
    return data.decode(errors="replace").splitlines(), start + len(data)


class ControlVerbs:
    def __init__(
        self,
        *,
        status: Callable[[], dict[str, Any]],
        fleet: AgentFleet,
        router: Router,
        dead_letters: DeadLetters,
        logs_dir: Path,
        authority: Authority,
        reload_policy: Callable[..., dict[str, Any]],
        tools: ToolGateway,
        pools: ModelPools | None = None,
        cluster: Cluster | None = None,
        autoscale: AutoscaleConfig | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self._cluster = cluster
        # who owns each agent's replica count (agentd.daemon._scale_owner)
        self._autoscale = autoscale or AutoscaleConfig(enabled=False)
        self._recorder = recorder
        self._status = status
        self._fleet = fleet
        self._router = router
        self._dead_letters = dead_letters
        self._logs_dir = logs_dir
        self._authority = authority
        self._reload_policy = reload_policy
        self._tools = tools
        self._pools = pools

    def register(self, control: ControlPlane) -> None:
        verbs: dict[str, Callable[[ControlRequest], Awaitable[Any]]] = {
            "status": self.status,
            "ps": self.ps,
            "send": self.send,
            "scale": self.scale,
            "autoscale": self.autoscale,
            "restart": self.restart,
            "stop": self.stop,
            "start": self.start,
            "drain": self.drain,
            "logs": self.logs,
            "dlq.list": self.dlq_list,
            "dlq.replay": self.dlq_replay,
            "policy.reload": self.policy_reload,
            "policy.test": self.policy_test,
            "policy.explain": self.policy_explain,
            "approvals": self.approvals,
            "approve": self.approve,
            "deny": self.deny,
            "models": self.models,
            "models.scale": self.models_scale,
            "nodes": self.nodes,
        }
        for verb, handler in verbs.items():
            control.register(verb, handler)

    def _command(self, request: ControlRequest, verb: str, **fields: Any) -> None:
        self._authority.record_command(request.operator, verb, request.args, **fields)

    async def status(self, request: ControlRequest) -> dict[str, Any]:
        return {"version": agentd.__version__, "pid": os.getpid(), **self._status()}

    async def nodes(self, request: ControlRequest) -> dict[str, Any]:
        """Hosts, their capacity and leases, the placer and the placement (a cluster only)."""
        if self._cluster is None:
            raise ControlError(
                "not_clustered",
                "this agentd runs alone ([cluster].enabled = false); "
                "`agentctl ps` shows its agents",
            )
        return await self._cluster.view()

    async def ps(self, request: ControlRequest) -> list[dict[str, Any]]:
        return await self._fleet.ps()

    async def send(self, request: ControlRequest) -> dict[str, Any]:
        args = dict(request.args)
        to = args.pop("to", None)
        if not isinstance(to, str) or not to:
            raise ControlError("bad_request", "send needs 'to', the name of an agent")
        unknown = set(args) - {"payload", "conversation_id", "reply_to", "id", "whole_state"}
        if unknown:
            raise ControlError("bad_request", f"send does not take {sorted(unknown)}")
        body: dict[str, Any] = {"from": f"operator:{request.operator}", "to": to, **args}
        try:
            message = Message.model_validate(body)
        except ValueError as exc:
            raise ControlError("bad_request", f"malformed message: {exc}") from None
        routed = await self._router.route(message)
        self._command(request, "send", agent=to, conversation_id=message.conversation_id)
        return {
            "message_id": routed.message_id,
            "to": to,
            "seq": routed.seq,
            "duplicate": routed.duplicate,
            "conversation_id": message.conversation_id,
        }

    async def scale(self, request: ControlRequest) -> dict[str, Any]:
        """Scale by hand; an autoscaled agent's count is pinned (agentd.daemon._scale_owner)."""
        name, count = _arg(request, "agent", str), _arg(request, "replicas", int)
        record = self._fleet.get(name)
        self._command(request, "scale", agent=name)
        pinned = pin_count(record, self._autoscale, operator=request.operator)
        try:
            before = await self._fleet.scale(name, count, reason=f"operator {request.operator}")
        except BaseException:
            if pinned:  # nothing changed: the autoscaler keeps the count
                record.pinned_by = None
            raise
        if pinned:
            why = f"operator {request.operator} scaled {name} to {count} by hand"
            record_pin(record, self._recorder, operator=request.operator, why=why)
        return {
            "agent": name,
            "before": before,
            "after": len(record.replicas),
            "scaled_by": count_owner(record, self._autoscale),
            "pinned": pinned,
        }

    async def autoscale(self, request: ControlRequest) -> dict[str, Any]:
        """`agentctl autoscale NAME on|off`: hand the count back to the autoscaler, or pin it."""
        name, enabled = _arg(request, "agent", str), _arg(request, "enabled", bool)
        record = self._fleet.get(name)
        self._command(request, "autoscale", agent=name, enabled=enabled)
        if enabled:
            release_count(record, self._autoscale, self._recorder, operator=request.operator)
        elif pin_count(record, self._autoscale, operator=request.operator):
            why = f"operator {request.operator} turned autoscaling of {name} off"
            record_pin(record, self._recorder, operator=request.operator, why=why)
        return {
            "agent": name,
            "replicas": len(record.replicas),
            "scaled_by": count_owner(record, self._autoscale),
        }

    async def restart(self, request: ControlRequest) -> dict[str, Any]:
        name = _arg(request, "agent", str)
        self._command(request, "restart", agent=name)
        return {"agent": name, "restarted": await self._fleet.restart(name)}

    async def stop(self, request: ControlRequest) -> dict[str, Any]:
        name = _arg(request, "agent", str)
        self._command(request, "stop", agent=name)
        before = await self._fleet.scale(name, 0, reason=f"stopped by {request.operator}")
        return {"agent": name, "stopped": before}

    async def start(self, request: ControlRequest) -> dict[str, Any]:
        name = _arg(request, "agent", str)
        self._command(request, "start", agent=name)
        revived = await self._fleet.start(name)
        record = self._fleet.get(name)
        return {
            "agent": name,
            "replicas": len(record.replicas),
            "revived": revived,
            "state": record.state,
        }

    async def drain(self, request: ControlRequest) -> dict[str, Any]:
        name = _arg(request, "agent", str)
        self._command(request, "drain", agent=name)
        await self._fleet.pause(name)
        return {"agent": name, "state": "paused", "hint": f"agentctl start {name} resumes it"}

    async def logs(self, request: ControlRequest) -> dict[str, Any]:
        """Each replica's captured output: the last `lines`, or what came after `offsets`."""
        name = _arg(request, "agent", str)
        lines = _arg(request, "lines", int, 50)
        offsets = _arg(request, "offsets", dict, None)
        chunks: dict[str, Any] = {}
        for replica in self._fleet.logs_of(name):
            offset = None if offsets is None else int(offsets.get(replica, 0))
            text, end = await anyio.to_thread.run_sync(
                _read_log, self._logs_dir / f"{replica}.log", offset, lines
            )
            chunks[replica] = {"lines": text, "offset": end}
        return {"agent": name, "replicas": chunks, "at": time.time()}

    async def dlq_list(self, request: ControlRequest) -> list[dict[str, Any]]:
        agent = _arg(request, "agent", str, None)
        limit = _arg(request, "limit", int, 100)
        return await self._dead_letters.list(agent=agent, limit=limit)

    async def dlq_replay(self, request: ControlRequest) -> dict[str, Any]:
        seq = _arg(request, "seq", int)
        self._command(request, "dlq.replay")
        return await self._dead_letters.replay(seq)

    async def policy_reload(self, request: ControlRequest) -> dict[str, Any]:
        try:
            return self._reload_policy(operator=request.operator)
        except ConfigError as exc:
            raise ControlError(
                "policy_invalid",
                f"the policy on disk is invalid; the running policy stays: {exc}",
                problems=exc.problems,
            ) from None

    async def policy_test(self, request: ControlRequest) -> dict[str, Any]:
        try:
            return self._authority.test()
        except ConfigError as exc:
            raise ControlError("policy_invalid", str(exc), problems=exc.problems) from None

    async def policy_explain(self, request: ControlRequest) -> dict[str, Any]:
        subject, obj = _arg(request, "subject", str), _arg(request, "object", str)
        action = _arg(request, "action", str)
        args = _arg(request, "args", dict, None)
        tainted = _arg(request, "tainted", bool, False)
        return self._authority.explain(subject, obj, action, args, tainted=tainted)

    async def approvals(self, request: ControlRequest) -> list[dict[str, Any]]:
        """Tool calls parked for a person's approval, oldest first."""
        return self._tools.pending()

    async def approve(self, request: ControlRequest) -> dict[str, Any]:
        approval_id = _arg(request, "id", str)
        self._command(request, "approve", approval_id=approval_id)
        return self._tools.approve(approval_id, request.operator)

    async def deny(self, request: ControlRequest) -> dict[str, Any]:
        approval_id = _arg(request, "id", str)
        reason = _arg(request, "reason", str, "denied by an operator")
        self._command(request, "deny", approval_id=approval_id)
        return self._tools.deny(approval_id, request.operator, reason)

    async def models(self, request: ControlRequest) -> list[dict[str, Any]]:
        """Model pools: replicas, placement, state, load, restarts, loading progress."""
        return self._pools.snapshot() if self._pools else []

    async def models_scale(self, request: ControlRequest) -> dict[str, Any]:
        pool, count = _arg(request, "pool", str), _arg(request, "replicas", int)
        if self._pools is None:
            raise ControlError("unknown_pool", f"no model pool {pool!r}", pools=[])
        self._command(request, "models.scale", pool=pool)
        try:
            before = await self._pools.scale(pool, count, reason=f"operator {request.operator}")
        except PlacementError as exc:
            raise ControlError("placement", str(exc), needs=exc.needs, free=exc.free) from None
        return {"pool": pool, "before": before, "after": count}
