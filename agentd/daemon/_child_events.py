"""Supervisor events, told twice: as decision records and on agentd.evt.<kind> for live views."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from nats.aio.client import Client

from agentd.bus import Subjects
from agentd.daemon._fleet import AgentRecord
from agentd.daemon._recorder import Recorder
from agentd.supervisor import ChildEvent, ChildEventKind

__all__ = ["CHILD_EVENT_KINDS", "NATS_CHILD", "report_child_event"]

log = logging.getLogger("agentd.daemon")

NATS_CHILD = "nats-server"

# supervisor events as decision-record kinds (agent replicas and the embedded nats-server
# alike): one for every event kind (older daemons wrote ready and unhealthy as x.child.*)
CHILD_EVENT_KINDS: dict[ChildEventKind, str] = {
    ChildEventKind.SPAWN: "agent.spawned",
    ChildEventKind.READY: "agent.ready",
    ChildEventKind.UNHEALTHY: "agent.unhealthy",
    ChildEventKind.EXIT: "agent.exited",
    ChildEventKind.STOP: "agent.exited",
    ChildEventKind.RESTART: "agent.restarted",
    ChildEventKind.FAILED: "agent.failed",
}


async def report_child_event(
    event: ChildEvent,
    *,
    agents: Mapping[str, AgentRecord],
    recorder: Recorder | None,
    nc: Client | None,
    subjects: Subjects,
) -> None:
    agent = event.name.rsplit("-", 1)[0] if event.name != NATS_CHILD else None
    record = agents.get(agent) if agent else None
    if recorder is not None:
        recorder.record(
            CHILD_EVENT_KINDS[event.kind],
            agent=agent,
            replica=event.name,
            decision=str(event.kind),
            reason=event.reason,
            pid=event.pid,
            exit_code=event.exit_code,
            signal=event.signal,
            restarts=event.restarts,
            lineage={"agent_version": record.agent.version} if record else None,
            # which sandbox the process runs under (agentctl ps shows it too)
            inputs=(
                {"sandbox": record.sandbox}
                if record is not None and event.kind == "spawn"
                else None
            ),
        )
    if nc is None or not nc.is_connected:
        return
    body = {
        "child": event.name,
        "pid": event.pid,
        "exit_code": event.exit_code,
        "signal": event.signal,
        "reason": event.reason,
        "restarts": event.restarts,
        "ts": event.at,
    }
    try:
        await nc.publish(subjects.event(str(event.kind)), json.dumps(body).encode())
    except Exception as exc:
        log.debug("event not published: %s", exc)
