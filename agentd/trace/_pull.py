"""Pulling a durable consumer's messages in large batches, at the cost of one callback each.

nats-py's `fetch(n)` waits for each of the n messages with its own `asyncio.wait_for` (a task
and a timer per message); at the ingest's rates that cost more than checking the records. The
`BatchPuller` sends the same JetStream pull request (`$JS.API.CONSUMER.MSG.NEXT`: `batch`
messages, or fewer when `expires` runs out) to its own inbox, whose callback only appends each
message to a list; the request ends when the batch is full or the server says so with a status
message (408 expired, 404 none, 409 e.g. the consumer is gone). The messages are ordinary
JetStream messages: `ack()`, `term()` and `metadata` work as usual.
"""

from __future__ import annotations

import itertools
import json

import anyio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["BatchPuller"]


class BatchPuller:
    """Batches from durable pull consumer `consumer` of `stream`; `async with` to subscribe."""

    def __init__(
        self, nc: Client, stream: str, consumer: str, *, batch: int, wait_s: float
    ) -> None:
        self._nc = nc
        self._request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.batch = batch
        self.wait_s = wait_s
        self._inbox = nc.new_inbox()
        self._tokens = itertools.count()
        self._reply = ""
        self._messages: list[Msg] = []
        self._done = anyio.Event()
        self._sub: Subscription | None = None

    async def __aenter__(self) -> BatchPuller:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_message)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    async def fetch(self) -> list[Msg]:
        """Up to `batch` messages: as many as the stream has now, waiting up to `wait_s` for
        the batch to fill when it has fewer (an empty list when none came)."""
        if self._sub is None:
            raise RuntimeError("BatchPuller.fetch() outside `async with`")
        self._reply = f"{self._inbox}.{next(self._tokens)}"
        self._done = anyio.Event()
        want = self.batch - len(self._messages)
        if want > 0:
            request = {"batch": want, "expires": int(self.wait_s * 1e9)}
            await self._nc.publish(
                self._request_subject, json.dumps(request).encode(), reply=self._reply
            )
            # the server ends every request (full batch or a status); the margin covers a
            # connection that dropped the request
            with anyio.move_on_after(self.wait_s + 2.0):
                await self._done.wait()
        messages, self._messages = self._messages, []
        return messages

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers and not msg.data else None
        if status is not None:
            # 100 is an idle heartbeat; the rest end a request, but only ours: a late status
            # of an earlier request must not cut this one short
            if status != "100" and msg.subject == self._reply:
                self._done.set()
            return
        # Messages count whichever request they answer: every one delivered must be handled.
        self._messages.append(msg)
        if len(self._messages) >= self.batch:
            self._done.set()
