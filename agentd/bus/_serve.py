"""One shape for every NATS service in the daemon: a subscription whose messages are each
handled in a task of their own, stopped cleanly.

A handler is expected to answer every request itself (its own error replies, its own decision
records). Whatever it lets escape is contained here: logged, answered with an `internal` error
when the request has a reply subject, and the service goes on serving. One message must never
end the task group that every other request (and, above it, the daemon) runs in."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["serve_each"]

log = logging.getLogger("agentd.bus")


@contextlib.asynccontextmanager
async def serve_each(
    nc: Client,
    subject: str,
    handle: Callable[[Msg], Coroutine[Any, Any, None]],
    *,
    queue: str = "",
) -> AsyncIterator[Subscription]:
    """Subscribe `subject` (in queue group `queue`) and run `handle(msg)` in its own task per
    message, so a slow one holds up no other, until the block ends; then unsubscribe (if the
    block has not already) and cancel the handlers still running."""
    async with anyio.create_task_group() as tg:

        async def contained(msg: Msg) -> None:
            try:
                await handle(msg)
            except Exception as exc:
                await _fail(msg, exc)

        async def on_message(msg: Msg) -> None:
            tg.start_soon(contained, msg)

        sub = await nc.subscribe(subject, queue=queue, cb=on_message)
        await nc.flush()
        try:
            yield sub
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await sub.unsubscribe()  # a second unsubscribe raises: nothing to do then
            tg.cancel_scope.cancel()


async def _fail(msg: Msg, exc: Exception) -> None:
    """What a handler let escape: log it, and answer the request (if it asked) with an error."""
    log.error(
        "a handler of %s failed on a %d-byte message: %s: %s",
        msg.subject,
        len(msg.data or b""),
        type(exc).__name__,
        str(exc)[:500],
        exc_info=not isinstance(exc, RecursionError | MemoryError),
    )
    if not msg.reply:
        return
    error = {
        "code": "internal",
        "message": f"the daemon could not handle this request on "
        f"{msg.subject}: {type(exc).__name__}",
    }
    with contextlib.suppress(Exception):
        await msg.respond(json.dumps({"ok": False, "error": error}).encode())
