"""A tool call's deadline, as the tool itself sees it: how a tool makes its timeout stop its work.

The gateway gives every call a deadline (its timeout). Inside the call, `call_deadline()` returns
it: a tool that runs work it can interrupt checks `expired()` as it goes, or registers what
stops the work with `on_cancel` (SQLite: `connection.interrupt`). The host cancels the deadline
when the timeout passes (or the call is cancelled), which runs those callbacks from another
thread, so a query in a worker thread is aborted at the deadline rather than running on after
its caller gave up. A thread cannot be killed: a sync tool that neither checks nor registers
keeps running past its timeout (and keeps its running slot; see `RunningCalls`). Isolated tools
get the same deadline in their child process, which is killed at it anyway.

Outside a call (a tool called directly, in a test) the deadline never expires.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

__all__ = ["CallDeadline", "call_deadline"]

log = logging.getLogger("agentd.tools")


class CallDeadline:
    """When a call must stop (`at`, time.monotonic), and what to run when it must."""

    def __init__(self, timeout_s: float | None = None) -> None:
        self.at = math.inf if timeout_s is None else time.monotonic() + timeout_s
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] = []

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def expired(self) -> bool:
        """The call was cancelled or its time is up: stop now."""
        return self._cancelled.is_set() or time.monotonic() >= self.at

    def remaining_s(self) -> float:
        return max(0.0, self.at - time.monotonic())

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], object]) -> Iterator[None]:
        """Run `callback` (from another thread) if the call is cancelled inside this block; it
        runs at once when the call is cancelled already."""
        with self._lock:
            late = self._cancelled.is_set()
            if not late:
                self._callbacks.append(callback)
        if late:
            _run(callback)
        try:
            yield
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

    def cancel(self) -> None:
        """The call must stop: mark it, and run what the tool registered. Repeatable."""
        with self._lock:
            if self._cancelled.is_set():
                return
            self._cancelled.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _run(callback)


def _run(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:  # a tool's stop hook failing must not fail the gateway
        log.exception("a tool's on_cancel callback failed")


_current: ContextVar[CallDeadline | None] = ContextVar("agentd_tool_deadline", default=None)
_NEVER = CallDeadline()


def call_deadline() -> CallDeadline:
    """The deadline of the tool call running in this context (thread or task)."""
    return _current.get() or _NEVER


@contextlib.contextmanager
def running_until(deadline: CallDeadline) -> Iterator[None]:
    """Make `deadline` the current call's for the block (the host sets it around a call)."""
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)
