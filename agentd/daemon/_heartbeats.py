"""Replica heartbeats: how the daemon knows a replica is ready, alive, and what it is doing.

Replicas publish on `agentd.hb.<agent>` every `[agents].heartbeat_s`. A replica is ready once a
heartbeat from its current pid arrives, and hung once none has arrived for three periods, or
once its beats say its event loop has not turned for longer than the agent's `run_timeout_s`
plus those three periods. Beats come from a thread of the replica's own (agentd.worker.
_beat_thread), so a run that holds the loop (a busy replica) does not silence them; the loop's
stall they report tells a busy replica from a hung one. A probe that comes late because the
daemon's own loop was held up judges nothing that time: the beats that arrived meanwhile may
not have been read yet.
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
from collections.abc import Awaitable, Callable
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
_SECONDS = ("loop_stall_s",)


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
        self._probed: dict[str, float] = {}  # replica -> when its liveness was last asked

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
        self._probed.pop(replica, None)
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

    async def is_alive(self, info: ChildInfo, *, max_stall_s: float | None = None) -> bool:
        """The supervisor's liveness probe (asked every half period): a heartbeat within the
        last 2.5 periods, so a dead or cut-off replica is caught within three; and, with
        `max_stall_s`, an event loop that turned within that long (a hung replica)."""
        window = self.period_s * (MISSED_BEATS - 0.5)
        now = time.monotonic()
        last, self._probed[info.name] = self._probed.get(info.name), now
        if last is not None and now - last > self.period_s:
            return True  # we were held up ourselves: unread beats may be waiting
        if self._bus_up_since is None or now - self._bus_up_since < window:
            return True
        beat = self._beats.get(info.name)
        if beat is None or beat.pid != info.pid or now - beat.at >= window:
            return False
        stall = beat.data.get("loop_stall_s", 0.0)
        return max_stall_s is None or stall <= max_stall_s + window

    def liveness(self, max_stall_s: float) -> Callable[[ChildInfo], Awaitable[bool]]:
        """A liveness probe for replicas whose runs may hold the loop up to `max_stall_s`
        (the agent's run_timeout_s)."""

        async def probe(info: ChildInfo) -> bool:
            return await self.is_alive(info, max_stall_s=max_stall_s)

        return probe


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
    for key in _SECONDS:
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            kept[key] = max(0.0, min(float(value), 1e9))
    return kept
