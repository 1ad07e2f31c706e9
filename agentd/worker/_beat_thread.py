"""Heartbeats from a thread of their own, so that a busy replica is not taken for a hung one.

A replica's runs share its event loop: a graph node that computes without awaiting (a sync
node, a CPU-bound step, a blocking library call) holds the loop for as long as it takes, and a
heartbeat sent from that loop waits behind it. The daemon then sees silence and kills a healthy,
busy replica as hung. So the beats go out from a thread with its own event loop and its own NATS
connection (same credentials): Python switches threads every few milliseconds however busy the
main thread is, so the beat keeps its period.

What a thread's beat cannot tell by itself is whether the loop still turns: a replica whose loop
is stuck forever would beat forever. So the main loop stamps `ReplicaStatus.loop_seen` every half
period (`ReplicaStatus.watch_loop`) and each beat carries `loop_stall_s`, the time since that
stamp. The daemon's liveness probe (agentd.daemon._heartbeats) takes a replica for hung only when
the beats stop (the process or its connection is gone) or the loop has been stuck longer than the
agent's `run_timeout_s` plus the heartbeat window: no legitimate run holds the loop longer than
it may run at all, and a run that does can no longer be timed out from inside.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client

from agentd.worker._status import ReplicaStatus

__all__ = ["HeartbeatThread"]

log = logging.getLogger("agentd.worker")


class HeartbeatThread:
    """`start()` after the replica said it is ready; `stop()` before it closes."""

    def __init__(
        self,
        status: ReplicaStatus,
        connect: Callable[[], Awaitable[Client]],
        period_s: float,
    ) -> None:
        self._status = status
        self._connect = connect
        self._period_s = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._main, name=f"heartbeat-{status.replica}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """No more beats; waits for the thread to close its connection. Safe to call twice."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _main(self) -> None:
        try:
            asyncio.run(self._beat())
        except Exception as exc:  # never kill the replica over its heartbeats
            log.error("%s: the heartbeat thread ended: %s", self._status.replica, exc)

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        nc: Client | None = None
        while nc is None:  # NATS may be restarting: keep trying, a period apart
            try:
                nc = await self._connect()
            except Exception as exc:
                log.warning("%s: heartbeats cannot connect yet: %s", self._status.replica, exc)
                if await loop.run_in_executor(None, self._stop.wait, self._period_s):
                    return
        subject = self._status.subjects.heartbeat(self._status.agent)
        try:
            while not self._stop.is_set():
                body: dict[str, Any] = self._status.beat_body(self._status.state)
                try:
                    await nc.publish(subject, json.dumps(body).encode())
                except Exception as exc:  # reconnecting: the next beat will go through
                    log.debug("heartbeat not sent: %s", exc)
                # wait a period, or less if stop() is called
                await loop.run_in_executor(None, self._stop.wait, self._period_s)
        finally:
            try:
                await nc.flush(timeout=1)
            except Exception as exc:
                log.debug("last heartbeat not flushed: %s", exc)
            await nc.close()
