"""One shape for every NATS service in the daemon: a subscription whose messages are each
handled in a task of their own, stopped cleanly."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["serve_each"]


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

        async def on_message(msg: Msg) -> None:
            tg.start_soon(handle, msg)

        sub = await nc.subscribe(subject, queue=queue, cb=on_message)
        await nc.flush()
        try:
            yield sub
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await sub.unsubscribe()  # a second unsubscribe raises: nothing to do then
            tg.cancel_scope.cancel()
