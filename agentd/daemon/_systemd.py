"""The systemd notify protocol (sd_notify), without libsystemd.

READY=1 once every service is up, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on shutdown,
STATUS=... along the way. Does nothing when NOTIFY_SOCKET is unset.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["SystemdNotifier"]

log = logging.getLogger("agentd.daemon")


class SystemdNotifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if address:
            # a leading '@' names a socket in the abstract namespace
            self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval_s: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_interval_s = int(usec) / 1_000_000 / 2
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> None:
        if self._address is None:
            return
        try:
            # never block the event loop on a receiver that does not read: drop instead
            kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            with socket.socket(socket.AF_UNIX, kind) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except BlockingIOError:
            log.warning("sd_notify: the receiver's queue is full; dropped %s", fields[0])
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self._address.lstrip("\0"), exc)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self, status: str = "") -> None:
        self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))
