"""The daemon's JetStream context: it rides out the embedded server's config reloads.

With NATS accounts (docs/identity.md) a config reload briefly leaves the daemon's account
without a responder on the JetStream API: measured here, one or two `$JS.API` requests in ten
reloads answered "no responders" while a client called `stream_info` back to back (publishes to
streams were unaffected, and without accounts none failed). Reloads happen whenever an identity
is issued or revoked, so the daemon retries such an answer for up to about a second.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js import JetStreamContext, api
from nats.js.errors import ServiceUnavailableError

__all__ = ["jetstream"]

T = TypeVar("T")

RETRY_DELAYS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4)


async def _riding_out_reloads(call: Callable[[], Awaitable[T]]) -> T:
    for delay in RETRY_DELAYS_S:
        try:
            return await call()
        except (NoRespondersError, ServiceUnavailableError):
            await anyio.sleep(delay)
    return await call()


class _SteadyJetStream(JetStreamContext):
    async def _api_request(
        self,
        req_subject: str,
        req: bytes = b"",
        timeout: float = 5,  # noqa: ASYNC109 (nats-py's signature)
    ) -> dict[str, Any]:
        parent = super()._api_request
        result: dict[str, Any] = await _riding_out_reloads(
            lambda: parent(req_subject, req, timeout)
        )
        return result

    async def get_msg(self, *args: Any, **kwargs: Any) -> api.RawStreamMsg:
        parent = super().get_msg
        return await _riding_out_reloads(lambda: parent(*args, **kwargs))


def jetstream(nc: Client) -> JetStreamContext:
    """`nc.jetstream()`, retrying an API request the server found no responder for."""
    return _SteadyJetStream(nc)
