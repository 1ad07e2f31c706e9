"""Applying the identity book to the embedded nats-server: rewrite its config, reload it.

nats-server re-reads its config on SIGHUP: new users may connect, changed permissions apply to
live connections, and connections of removed users are closed at once (measured: ~3 ms after
the signal). A reload is asynchronous, so every config carries a fresh password for a `probe`
user; once the probe can connect with it, the new config is in force.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import anyio

from agentd.bus import write_private
from agentd.errors import BusUnavailable
from agentd.identity._book import IdentityBook, fresh_password

__all__ = ["ServerAuth"]

log = logging.getLogger("agentd.identity")

PROBE_RETRY_S = 0.005


class ServerAuth:
    """The embedded server's config file, kept in step with the book."""

    def __init__(
        self,
        book: IdentityBook,
        *,
        config_file: Path,
        render_config: Callable[[str], str],
        server_pid: Callable[[], int | None],
        url: str,
        tls: ssl.SSLContext | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.book = book
        self.config_file = config_file
        self._render_config = render_config
        self._server_pid = server_pid
        self._url = url
        self._tls = tls
        self._timeout_s = timeout_s
        self._lock = anyio.Lock()
        self._written_accounts: frozenset[str] = frozenset()
        self.reloads = 0

    def write(self) -> None:
        """Write the server's config (mode 0600: it holds the bootstrap token)."""
        write_private(self.config_file, self._render_config(self.book.render_authorization()))
        self._written_accounts = self.book.account_names()

    async def apply(self) -> float:
        """Make the running server use the book as it is now; returns the seconds it took."""
        async with self._lock:
            started = time.monotonic()
            before = self._written_accounts
            await self._reload()
            if self._written_accounts - before:
                # nats-server 2.15 links the imports of an account that a reload introduces to
                # a copy of the exporting account nobody uses; a second reload, with the account
                # now known, links them to the live one (measured: without it the new account's
                # requests find no responder)
                await self._reload()
            took = time.monotonic() - started
            log.debug("nats-server reloaded its users in %.1f ms", took * 1000)
            return took

    async def _reload(self) -> None:
        self.book.probe_password = fresh_password()
        self.write()
        pid = self._server_pid()
        if pid is None:
            raise BusUnavailable("the embedded nats-server is not running; cannot reload it")
        os.kill(pid, signal.SIGHUP)
        await self._until_probe_connects()
        self.reloads += 1

    async def _until_probe_connects(self) -> None:
        with anyio.fail_after(self._timeout_s):
            # the server is another process: nothing to wait on but its answer to a probe
            while not await self._probe_accepted():  # noqa: ASYNC110
                await anyio.sleep(PROBE_RETRY_S)

    async def _probe_accepted(self) -> bool:
        """One CONNECT as the probe, in the raw protocol (a refused client library connection
        would leave its socket to the garbage collector): PONG means the new config is in."""
        parsed = urlparse(self._url.split(",")[0])
        try:
            stream: Any = await anyio.connect_tcp(
                parsed.hostname or "127.0.0.1", parsed.port or 4222
            )
        except OSError:  # restarting
            return False
        try:
            buffer = await _line(stream, b"")
            if self._tls is not None:
                # here: agentd.identity is imported by agentctl, which never probes
                from anyio.streams.tls import TLSStream

                stream = await TLSStream.wrap(
                    stream,
                    hostname=parsed.hostname,
                    ssl_context=self._tls,
                    standard_compatible=False,
                )
            hello = {"verbose": False, "pedantic": False, "user": "probe"}
            hello["pass"] = self.book.probe_password
            await stream.send(f"CONNECT {json.dumps(hello)}\r\nPING\r\n".encode())
            answer = await _line(stream, buffer.split(b"\r\n", 1)[1])
            return answer.startswith(b"PONG")
        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError):
            return False
        finally:
            await stream.aclose()


async def _line(stream: Any, buffer: bytes) -> bytes:
    while b"\r\n" not in buffer:
        buffer += await stream.receive()
    return buffer
