"""Replica heartbeats: how the daemon knows a replica is ready, alive, and what it is doing.

Replicas publish on `agentd.hb.<agent>` every `[agents].heartbeat_s`. A replica is ready once a
heartbeat from its current pid arrives, and hung once none has arrived for three periods.
Heartbeats travel over NATS, so while the daemon's own connection is down (and for three
periods after it returns) silence proves nothing and every replica counts as alive.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
from nats.aio.msg import Msg

from agentd.supervisor import ChildInfo

__all__ = ["MISSED_BEATS", "Beat", "HeartbeatTracker"]

log = logging.getLogger("agentd.fleet")

MISSED_BEATS = 3


@dataclass(frozen=True)
class Beat:
    pid: int
    at: float  # monotonic
    data: dict[str, Any]


class HeartbeatTracker:
    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._beats: dict[str, Beat] = {}
        self._arrived = anyio.Event()
        self._bus_up_since: float | None = time.monotonic()

    async def on_message(self, msg: Msg) -> None:
        try:
            data = json.loads(msg.data)
            replica, pid = str(data["replica"]), int(data["pid"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed heartbeat on %s", msg.subject)
            return
        # the subject names who speaks (NATS permissions): a beat for another agent's replica
        # is a forgery, whatever its payload says
        agent = msg.subject.rsplit(".", 1)[-1]
        if data.get("agent") != agent or not replica.startswith(f"{agent}-"):
            log.warning("ignoring a heartbeat on %s for replica %r", msg.subject, replica)
            return
        self._beats[replica] = Beat(pid, time.monotonic(), data)
        self._arrived.set()
        self._arrived = anyio.Event()

    def latest(self, replica: str, pid: int | None) -> dict[str, Any]:
        """The newest heartbeat of this process of `replica` (empty if none yet)."""
        beat = self._beats.get(replica)
        return beat.data if beat is not None and beat.pid == pid else {}

    def forget(self, replica: str) -> None:
        self._beats.pop(replica, None)

    def bus_down(self) -> None:
        self._bus_up_since = None

    def bus_up(self) -> None:
        self._bus_up_since = time.monotonic()

    async def wait_ready(self, info: ChildInfo) -> None:
        """The supervisor's ready probe: the first heartbeat of this pid."""
        while True:
            beat = self._beats.get(info.name)
            if beat is not None and beat.pid == info.pid:
                return
            await self._arrived.wait()

    async def is_alive(self, info: ChildInfo) -> bool:
        """The supervisor's liveness probe (asked every half period): a heartbeat within the
        last 2.5 periods, so a hung replica is caught within three."""
        window = self.period_s * (MISSED_BEATS - 0.5)
        now = time.monotonic()
        if self._bus_up_since is None or now - self._bus_up_since < window:
            return True
        beat = self._beats.get(info.name)
        return beat is not None and beat.pid == info.pid and now - beat.at < window
