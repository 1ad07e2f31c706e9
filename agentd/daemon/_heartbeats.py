"""Replica heartbeats: how the daemon knows a replica is ready, alive, and what it is doing.

Replicas publish on `agentd.hb.<agent>` every `[agents].heartbeat_s`. A replica is ready once a
heartbeat from its current pid arrives, and hung once none has arrived for three periods.
Heartbeats travel over NATS, so while the daemon's own connection is down (and for three
periods after it returns) silence proves nothing and every replica counts as alive.

A heartbeat is what a replica says about itself, so hostile code can say anything in it. Only
replicas the fleet started are tracked (`expect` / `forget`): a beat for any other name is
dropped, so a replica cannot make the daemon keep state for names it invents. A beat is parsed
within bounds (size, depth) and only the fields the daemon reads are kept, each bounded, so
what the tracker holds is at most one small beat per replica the fleet runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
from nats.aio.msg import Msg

from agentd.bus import BoundedJSONError, loads_bounded
from agentd.supervisor import ChildInfo

__all__ = ["MAX_HEARTBEAT_BYTES", "MISSED_BEATS", "Beat", "HeartbeatTracker"]

log = logging.getLogger("agentd.fleet")

MISSED_BEATS = 3
# a worker's beat is ~300 bytes (agentd.worker ReplicaStatus); a last_error may lengthen it
MAX_HEARTBEAT_BYTES = 16 * 1024
MAX_TEXT_CHARS = 1000
# the fields the daemon reads (ps, the autoscaler's inflight), and their types
_COUNTS = ("inflight", "completed", "failed", "duplicates", "dead_lettered")
_TEXTS = ("state", "version", "last_error")


@dataclass(frozen=True)
class Beat:
    pid: int
    at: float  # monotonic
    data: dict[str, Any]


class HeartbeatTracker:
    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._beats: dict[str, Beat] = {}
        self._expected: set[str] = set()
        self._arrived = anyio.Event()
        self._bus_up_since: float | None = time.monotonic()

    def expect(self, replica: str) -> None:
        """The fleet starts `replica`: its beats count from now on."""
        self._expected.add(replica)

    async def on_message(self, msg: Msg) -> None:
        try:
            data = loads_bounded(
                msg.data, what=f"heartbeat on {msg.subject}", max_bytes=MAX_HEARTBEAT_BYTES
            )
            replica, pid = str(data["replica"]), int(data["pid"])
        except (BoundedJSONError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a malformed heartbeat on %s: %s", msg.subject, str(exc)[:200])
            return
        # the subject names who speaks (NATS permissions): a beat for another agent's replica
        # is a forgery, whatever its payload says
        agent = msg.subject.rsplit(".", 1)[-1]
        if data.get("agent") != agent or not replica.startswith(f"{agent}-"):
            log.warning("ignoring a heartbeat on %s for replica %r", msg.subject, replica[:100])
            return
        if replica not in self._expected:
            log.warning(
                "ignoring a heartbeat on %s for replica %r, which the fleet did not start",
                msg.subject,
                replica[:100],
            )
            return
        self._beats[replica] = Beat(pid, time.monotonic(), _kept(data))
        self._arrived.set()
        self._arrived = anyio.Event()

    def latest(self, replica: str, pid: int | None) -> dict[str, Any]:
        """The newest heartbeat of this process of `replica` (empty if none yet)."""
        beat = self._beats.get(replica)
        return beat.data if beat is not None and beat.pid == pid else {}

    def forget(self, replica: str) -> None:
        """The fleet stopped `replica` (or gave up on it): its beats no longer count."""
        self._beats.pop(replica, None)
        self._expected.discard(replica)

    @property
    def tracked(self) -> dict[str, dict[str, Any]]:
        """What the tracker holds, by replica (for tests and diagnostics)."""
        return {name: dict(beat.data) for name, beat in self._beats.items()}

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


def _kept(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a beat the daemon reads, bounded; everything else is dropped."""
    kept: dict[str, Any] = {}
    for key in _COUNTS:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            kept[key] = max(0, min(value, 2**53))
    for key in _TEXTS:
        value = data.get(key)
        if isinstance(value, str):
            kept[key] = value[:MAX_TEXT_CHARS]
    return kept
