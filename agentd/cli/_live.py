"""Live views: `agentctl logs NAME -f` and `agentctl top`."""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from typing import Any

import anyio
from nats.aio.msg import Msg

from agentd.cli._client import ControlClient
from agentd.cli._views import render_ps

__all__ = ["follow_logs", "print_logs", "top"]


def print_logs(result: dict[str, Any]) -> dict[str, int]:
    offsets = {}
    for replica, chunk in sorted(result["replicas"].items()):
        for line in chunk["lines"]:
            print(f"{replica} | {line}")
        offsets[replica] = chunk["offset"]
    sys.stdout.flush()
    return offsets


async def follow_logs(ctl: ControlClient, agent: str, lines: int, interval_s: float = 0.5) -> None:
    offsets = print_logs(await ctl.call("logs", {"agent": agent, "lines": lines}))
    while True:
        await anyio.sleep(interval_s)
        result = await ctl.call("logs", {"agent": agent, "offsets": offsets})
        offsets.update(print_logs(result))


async def top(
    ctl: ControlClient, *, interval_s: float = 1.0, iterations: int | None = None
) -> None:
    """Redraw `ps` every interval, with the latest lifecycle events (agentd.evt.*) below it."""
    events: deque[str] = deque(maxlen=10)

    async def on_event(msg: Msg) -> None:
        try:
            body = json.loads(msg.data)
        except ValueError:
            return
        kind = msg.subject.rsplit(".", 1)[-1]
        if kind == "decision":  # every decision record: `agentctl trace --follow` shows those
            return
        who = body.get("child") or body.get("agent") or ""
        detail = body.get("reason") or ""
        events.append(f"{time.strftime('%H:%M:%S')} {kind:<9} {who} {detail}")

    sub = await ctl.nc.subscribe(ctl.subjects.event(">"), cb=on_event)
    try:
        count = 0
        while iterations is None or count < iterations:
            agents = await ctl.call("ps")
            screen = [
                f"agentd top: {ctl.url}   {time.strftime('%H:%M:%S')}   (Ctrl-C to quit)",
                "",
                render_ps(agents),
                "",
                "recent events:",
                *(events or ["  (none yet)"]),
            ]
            sys.stdout.write("\x1b[H\x1b[2J" + "\n".join(screen) + "\n")
            sys.stdout.flush()
            count += 1
            await anyio.sleep(interval_s)
    finally:
        await sub.unsubscribe()
