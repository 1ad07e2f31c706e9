"""Giving up on a message: the replica asks, the daemon keeps the dead letter.

Only the daemon writes the dead-letter stream (docs/identity.md, "Accounts"): the replica names
the message by its sequence in the inbox stream and the daemon copies it from this agent's inbox
itself, so a replica can neither forge a dead letter nor attribute one to another sender.
"""

from __future__ import annotations

import contextlib
import json
import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from agentd.bus import Subjects

__all__ = ["give_up"]

log = logging.getLogger("agentd.worker")

DEAD_LETTER_TIMEOUT_S = 5.0


async def give_up(
    nc: Client, subjects: Subjects, agent: str, msg: Msg, error: str, *, attempts: int
) -> bool:
    """Have the daemon keep `msg` as a dead letter, then terminate it. False when the daemon
    did not answer: the message is released instead, and its next delivery decides again."""
    request = {
        "seq": msg.metadata.sequence.stream,
        "error": error[:1000].replace("\n", " "),
        "deliveries": attempts,
    }
    try:
        reply = await nc.request(
            subjects.dead_letter_request(agent),
            json.dumps(request).encode(),
            timeout=DEAD_LETTER_TIMEOUT_S,
        )
        answer = json.loads(reply.data)
    except Exception as exc:
        log.warning("dead-lettering message %s failed: %s", request["seq"], exc)
        with contextlib.suppress(Exception):
            await msg.nak()
        return False
    if not answer.get("ok"):
        log.error("the daemon refused dead letter %s: %s", request["seq"], answer)
    await msg.term()
    return True
