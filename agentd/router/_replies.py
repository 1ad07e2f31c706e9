"""The reply relay: a run's answer crosses from the answerer's NATS account to the asker's.

With NATS accounts (docs/identity.md) each identity imports `agentd.reply.>` as a service, so
what a replica publishes there arrives in the daemon's account only, and imports
`agentd.deliver.<itself>.>` as a stream, seen as `agentd.reply.<itself>.>`. NATS does not pass
a message from a service import on to a stream import, so the daemon does: every reply is
republished, unchanged, under `agentd.deliver.`. Reply subjects end in a random token only the
asker knows; the relay adds no right anyone lacked.
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg

from agentd.bus import Subjects, serve_each

__all__ = ["ReplyRelay"]

log = logging.getLogger("agentd.router")


class ReplyRelay:
    def __init__(self, nc: Client, subjects: Subjects) -> None:
        self._nc = nc
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
        try:
            await self._nc.publish(
                self._subjects.delivered(owner, token), msg.data, headers=msg.headers or None
            )
        except Exception:  # one reply lost to a broken connection; the relay goes on
            log.exception("relaying a reply to %s failed", owner)
            return
        self.relayed += 1
