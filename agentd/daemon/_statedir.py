"""The state directory and its lock: one daemon per state directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from agentd.errors import StateDirLocked

__all__ = ["StateDirLock"]


class StateDirLock:
    """An exclusive flock on `<state_dir>/agentd.pid`, held for the daemon's lifetime.

    The kernel drops the lock when the process dies, however it dies, so a SIGKILLed daemon never
    leaves a stale lock behind; the pid inside is only there to name the holder in the error.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "agentd.pid"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirLocked(
                f"another agentd (pid {holder}) is already running with state directory "
                f"{self.state_dir}; stop it first, or give this one another [daemon].state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
