"""Shared helpers for the supervisor tests: child commands, probes, an event log, pid checks."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from agentd.supervisor import ChildEvent, ChildEventKind, ChildInfo, Probe
from agentd.supervisor._process import proc_stat, wait_pids_gone

CHILDREN = Path(__file__).parent / "children"
CHILD = CHILDREN / "child.py"


def child_argv(*args: str) -> list[str]:
    """argv running tests/supervisor/children/child.py with `args`."""
    return [sys.executable, str(CHILD), *args]


def pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (checked through /proc, not our own bookkeeping)."""
    stat = proc_stat(pid)
    return stat is not None and stat.state not in ("Z", "X", "x")


async def wait_gone(pid: int, limit_s: float = 5.0) -> bool:
    """Wait until `pid` is dead; False if it still lives after `limit_s`."""
    with anyio.move_on_after(limit_s):
        await wait_pids_gone([pid])
    return not pid_alive(pid)


def file_exists(path: Path) -> Probe:
    """A ready probe passing once `path` exists (children create it when set up)."""

    async def probe(info: ChildInfo) -> None:
        # Another process creates the file: nothing to await but the file system, so poll,
        # as a real probe polls a health endpoint.
        while not await anyio.Path(path).exists():  # noqa: ASYNC110
            await anyio.sleep(0.01)

    return probe


class EventLog:
    """An on_event callback that keeps every event and lets a test await the ones it expects."""

    def __init__(self) -> None:
        self.events: list[ChildEvent] = []
        self._changed = anyio.Event()

    def __call__(self, event: ChildEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = anyio.Event()

    def of(self, kind: ChildEventKind | None = None, name: str | None = None) -> list[ChildEvent]:
        """The events of that kind (any if None) for that child (any if None), oldest first."""
        return [
            e
            for e in self.events
            if (kind is None or e.kind == kind) and (name is None or e.name == name)
        ]

    async def wait_for(
        self,
        kind: ChildEventKind,
        name: str | None = None,
        *,
        count: int = 1,
        limit_s: float = 10.0,
    ) -> list[ChildEvent]:
        """Wait until `count` events of `kind` arrived for `name`; returns all of them."""
        with anyio.fail_after(limit_s):
            while len(self.of(kind, name)) < count:
                await self._changed.wait()
        return self.of(kind, name)

    def kinds(self, name: str) -> list[str]:
        """The kinds of `name`'s events, in order."""
        return [str(e.kind) for e in self.of(name=name)]

    def spawned_pids(self) -> set[int]:
        """Every pid the supervisor reported spawning."""
        return {e.pid for e in self.of(ChildEventKind.SPAWN) if e.pid is not None}
