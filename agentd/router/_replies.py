"""The reply relay: a run's answer crosses from the answerer's NATS account to the asker's.

With NATS accounts (docs/identity.md) each identity imports `agentd.reply.>` as a service, so
what a replica publishes there arrives in the daemon's account only, and imports
`agentd.deliver.<itself>.>` as a stream, seen as `agentd.reply.<itself>.>`. NATS does not pass
a message from a service import on to a stream import, so the daemon does: every reply is
republished, unchanged, under `agentd.deliver.`. Reply subjects end in a random token only the
asker knows; the relay adds no right anyone lacked.

Taint: the router noted which agent each ask went to; when that agent's run is tainted
(agentd/tools/README.md, "Taint"), the asker is marked tainted before the reply is relayed,
and the relayed reply says so in `Agentd-Taint`. An answer cannot launder what the answering
run read. (Without identity there is no relay: replies go straight to the asker, untracked.)
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentd.bus import Subjects, serve_each

__all__ = ["ReplyRelay"]

log = logging.getLogger("agentd.router")


class ReplyTaint(Protocol):
    async def taint_reply(self, reply_subject: str) -> Any: ...


class ReplyRelay:
    def __init__(self, nc: Client, subjects: Subjects, *, taint: ReplyTaint | None = None) -> None:
        self._nc = nc
        self._taint = taint
        self._subjects = subjects
        self._prefix = subjects.reply_all[:-1]  # "agentd.reply."
        self._stopped = anyio.Event()
        self.relayed = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with serve_each(self._nc, self._subjects.reply_all, self._relay, queue="replies"):
            task_status.started()
            await self._stopped.wait()

    async def shutdown(self) -> None:
        self._stopped.set()

    async def _relay(self, msg: Msg) -> None:
        owner, _, token = msg.subject[len(self._prefix) :].partition(".")
        if not owner or not token:
            return
        headers = dict(msg.headers or {})
        headers.pop("Agentd-Taint", None)  # only the daemon says whether a reply is tainted
        try:
            taint = await self._taint.taint_reply(msg.subject) if self._taint else None
            if taint is not None:
                headers["Agentd-Taint"] = taint.record_id
            await self._nc.publish(
                self._subjects.delivered(owner, token), msg.data, headers=headers or None
            )
        except Exception:  # one reply lost to a broken connection; the relay goes on
            log.exception("relaying a reply to %s failed", owner)
            return
        self.relayed += 1
