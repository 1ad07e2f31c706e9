"""`agentctl ps`: every agent, its replicas and their state, from the supervisor's view of the
processes and the replicas' own heartbeats (a paused or draining replica is still RUNNING to the
supervisor)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from agentd.config import AutoscaleConfig
from agentd.daemon._heartbeats import HeartbeatTracker
from agentd.daemon._scale_owner import count_owner
from agentd.supervisor import ChildState, Supervisor

if TYPE_CHECKING:
    from agentd.daemon._fleet import AgentRecord

__all__ = ["ps_rows", "replica_index"]


def replica_index(replica: str) -> int:
    """`echo-3` -> 3 (replicas sort by index, not by name)."""
    tail = replica.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


async def ps_rows(
    agents: Mapping[str, AgentRecord],
    supervisor: Supervisor,
    heartbeats: HeartbeatTracker,
    backlog: Callable[[str], Awaitable[dict[str, int]]],
    *,
    autoscale: AutoscaleConfig | None = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    now = time.time()
    for name, record in sorted(agents.items()):
        replicas = []
        for replica in sorted(record.replicas, key=replica_index):
            try:
                info = supervisor.info(replica)
            except KeyError:
                continue
            live = heartbeats.latest(replica, info.pid)
            state = str(info.state)
            if info.state == ChildState.RUNNING and live.get("state") in {"paused", "draining"}:
                state = str(live["state"])
            replicas.append(
                {
                    "name": replica,
                    "pid": info.pid,
                    "state": state,
                    "uptime_s": round(now - info.started_at, 1) if info.started_at else None,
                    "restarts": info.restarts,
                    "inflight": live.get("inflight", 0),
                    "completed": live.get("completed", 0),
                    "last_error": live.get("last_error") or info.last_error,
                    "version": live.get("version", record.agent.version),
                }
            )
        if replicas and all(r["state"] == "failed" for r in replicas):
            record.state = "failed"
        rows.append(
            {
                "agent": name,
                "version": record.agent.version,
                "description": record.agent.spec.description,
                "state": record.state,
                "desired": record.desired,
                # who sets the count: autoscaler | pinned:<operator> | operator
                "scaled_by": count_owner(record, autoscale or AutoscaleConfig(enabled=False)),
                "bounds": record.agent.spec.replicas.model_dump(),
                "concurrency": record.agent.spec.concurrency,
                "spawned_by": record.spawned_by,
                "error": record.error,
                "backlog": await backlog(name),
                "replicas": replicas,
                "sandbox": record.sandbox,
            }
        )
    return rows
