"""Open a NATS connection with the options agentd wants everywhere.

nats-py runs on asyncio only, so this module waits with asyncio's own timeout and socket rather
than anyio's (the same thing inside the daemon's anyio task groups, which run on asyncio): a
one-shot client such as agentctl then never loads anyio's event-loop backend, about 20 ms of
its start (agentd/cli/README.md, "Startup").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse

import nats
from nats.aio.client import Client

from agentd.bus._credentials import Credentials
from agentd.errors import BusUnavailable

__all__ = ["connect"]

log = logging.getLogger("agentd.bus")


async def connect(
    url: str,
    *,
    name: str,
    timeout_s: float = 5.0,
    reconnect: bool = True,
    on_disconnected: Callable[[], Awaitable[None]] | None = None,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
    credentials: Credentials | None = None,
    tls: ssl.SSLContext | None = None,
) -> Client:
    """Connect to NATS at `url`.

    With `reconnect` (services), a lost connection is retried forever, quickly, so a restarted
    embedded nats-server is picked up within a fraction of a second. Without it (agentctl), a
    refused connection fails at once with BusUnavailable.

    `credentials` say who connects (NATS checks them; see agentd.identity); `tls` is the client
    context for a server that speaks TLS (a `tls://` URL).
    """

    last_error: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        last_error[:] = [exc]
        log.debug("nats: %s", exc)

    async def disconnected_cb() -> None:
        if reconnect:  # a one-shot client (agentctl) closing is not news
            log.warning("nats: disconnected from %s", url)
        if on_disconnected:
            await on_disconnected()

    async def reconnected_cb() -> None:
        log.info("nats: reconnected to %s", url)
        if on_reconnected:
            await on_reconnected()

    servers = [s.strip() for s in url.split(",")]
    if not reconnect:
        await _any_reachable(servers, timeout_s)
    try:
        # nats-py keeps retrying a refused first connection even without reconnects: bound it
        async with asyncio.timeout(timeout_s + 0.5):
            return await nats.connect(
                servers=servers,
                name=name,
                connect_timeout=timeout_s,
                allow_reconnect=reconnect,
                max_reconnect_attempts=-1 if reconnect else 0,
                reconnect_time_wait=0.1,
                ping_interval=5,
                max_outstanding_pings=3,
                error_cb=error_cb,
                disconnected_cb=disconnected_cb,
                reconnected_cb=reconnected_cb,
                tls=tls,
                **(credentials.connect_options() if credentials else {}),
            )
    except Exception as exc:  # nats-py raises several unrelated types for "not reachable"
        cause = last_error[0] if last_error else exc
        if "authorization violation" in str(cause).lower():
            who = credentials.identity if credentials else "an anonymous client"
            raise BusUnavailable(
                f"NATS at {url} refused {who}: authorization violation (credentials unknown, "
                "revoked or missing)"
            ) from cause
        raise BusUnavailable(f"cannot reach NATS at {url}: {cause or type(cause).__name__}") from (
            cause
        )


async def _any_reachable(servers: list[str], timeout_s: float) -> None:
    """Fail at once when none of a cluster's servers listens (one down is fine)."""
    for server in servers[:-1]:
        try:
            await _reachable(server, timeout_s)
        except BusUnavailable:
            continue
        return
    await _reachable(servers[-1], timeout_s)


async def _reachable(server: str, timeout_s: float) -> None:
    """Fail at once, with the OS's reason, when nothing listens at the server's address."""
    parsed = urlparse(server if "://" in server else f"nats://{server}")
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        raise BusUnavailable(f"cannot reach NATS at {server}: timed out") from None
    except OSError as exc:  # several addresses (localhost: ::1 and 127.0.0.1): no errno, all said
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise BusUnavailable(f"cannot reach NATS at {server}: {reason}") from None
    writer.close()
    with contextlib.suppress(OSError):  # it listens: that was the question
        await writer.wait_closed()
