"""Applying the identity book to the embedded nats-server: rewrite its config, reload it.

nats-server re-reads its config on SIGHUP: new users may connect, changed permissions apply to
live connections, and connections of removed users are closed at once (measured: ~3 ms after
the signal). A reload is asynchronous, so every config carries a fresh password for a `probe`
user; once the probe can connect with it, the new config is in force.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import nats

from agentd.errors import BusUnavailable
from agentd.identity._book import IdentityBook

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
        self.reloads = 0

    def write(self) -> None:
        """Write the server's config (mode 0600: it holds the bootstrap token)."""
        text = self._render_config(self.book.render_authorization())
        fd, tmp = tempfile.mkstemp(dir=self.config_file.parent, prefix=".nats-server.conf.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.config_file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def apply(self) -> float:
        """Make the running server use the book as it is now; returns the seconds it took."""
        async with self._lock:
            started = time.monotonic()
            self.book.probe_password = _fresh_password()
            self.write()
            pid = self._server_pid()
            if pid is None:
                raise BusUnavailable("the embedded nats-server is not running; cannot reload it")
            os.kill(pid, signal.SIGHUP)
            await self._until_probe_connects()
            self.reloads += 1
            took = time.monotonic() - started
            log.debug("nats-server reloaded its users in %.1f ms", took * 1000)
            return took

    async def _until_probe_connects(self) -> None:
        async def quiet(exc: Exception) -> None:
            return None

        with anyio.fail_after(self._timeout_s):
            while True:
                try:
                    nc = await nats.connect(
                        self._url,
                        user="probe",
                        password=self.book.probe_password,
                        allow_reconnect=False,
                        max_reconnect_attempts=0,
                        connect_timeout=1,
                        tls=self._tls,
                        error_cb=quiet,
                    )
                except Exception:  # the old config still refuses the new password
                    await anyio.sleep(PROBE_RETRY_S)
                    continue
                await nc.close()
                return


def _fresh_password() -> str:
    import secrets

    return secrets.token_urlsafe(18)
