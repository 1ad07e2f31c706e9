"""What a replica tells the daemon about itself: ready, paused or draining, runs in flight, and
its counts, in a heartbeat every `heartbeat_s` (the daemon's readiness and liveness probes read
them); and the daemon's pause and resume commands, which change that state.

State changes are published at once from the event loop (`publish`); the periodic beats come
from a thread of their own (agentd.worker._beat_thread), with how long the loop has not turned
(`loop_stall_s`, from `watch_loop`'s stamps), so that a run holding the loop does not silence
them."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentd.bus import Subjects

__all__ = ["ReplicaStatus"]

log = logging.getLogger("agentd.worker")


class ReplicaStatus:
    """One replica's state and counters, and its heartbeats."""

    def __init__(self, agent: str, replica: str, version: str, subjects: Subjects) -> None:
        self.agent = agent
        self.replica = replica
        self.version = version
        self.subjects = subjects
        self.draining = anyio.Event()
        self.resumed = anyio.Event()  # replaced by a fresh one on pause
        self.resumed.set()
        self.inflight = 0
        self.stats = {"completed": 0, "failed": 0, "duplicates": 0, "dead_lettered": 0}
        self.last_error: str | None = None
        self.nc: Client | None = None  # set once connected
        # when the event loop last turned (monotonic); read by the heartbeat thread
        self.loop_seen = time.monotonic()

    @property
    def state(self) -> str:
        if self.draining.is_set():
            return "draining"
        return "ready" if self.resumed.is_set() else "paused"

    def drain(self) -> None:
        """No new work from now on (a paused replica drains too)."""
        self.draining.set()
        self.resumed.set()

    async def on_command(self, msg: Msg) -> None:
        """The daemon's `pause` / `resume` for this agent (its command subject)."""
        try:
            verb = json.loads(msg.data).get("verb")
        except (ValueError, AttributeError):
            return
        if verb == "pause":
            self.resumed = anyio.Event()
            log.info("%s paused: taking no new work", self.replica)
        elif verb == "resume":
            self.resumed.set()
            log.info("%s resumed", self.replica)
        await self.publish(self.state)

    async def watch_loop(self, heartbeat_s: float) -> None:
        """Stamp `loop_seen` every half period: a beat tells how long the loop has not turned."""
        while True:
            self.loop_seen = time.monotonic()
            await anyio.sleep(heartbeat_s / 2)

    def beat_body(self, state: str) -> dict[str, Any]:
        """One heartbeat (also built on the heartbeat thread: plain reads, no awaits)."""
        return {
            "agent": self.agent,
            "replica": self.replica,
            "pid": os.getpid(),
            "version": self.version,
            "state": state,
            "inflight": self.inflight,
            "last_error": self.last_error,
            "ts": time.time(),
            "loop_stall_s": round(max(0.0, time.monotonic() - self.loop_seen), 3),
            **self.stats,
        }

    async def publish(self, state: str) -> None:
        beat = self.beat_body(state)
        if self.nc is None:
            return
        try:
            await self.nc.publish(self.subjects.heartbeat(self.agent), json.dumps(beat).encode())
        except Exception as exc:  # reconnecting: the next beat will go through
            log.debug("heartbeat not sent: %s", exc)
