"""Waiting for something another process does: one helper, with a deadline and a message.

Daemons, replicas and servers in these tests are other processes; most of what they do has no
event a test can wait on (a row in another process's SQLite file, a line in `agentctl ps`). A
test names the condition and how long it may take; a condition that never holds fails the test
with what it waited for, never passes by default."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    """The first truthy value `check()` returns within `timeout_s`; AssertionError after."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)
