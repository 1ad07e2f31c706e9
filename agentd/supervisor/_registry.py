"""The registry of live children on disk, and the reaping of orphans a dead supervisor left.

PR_SET_PDEATHSIG kills a SIGKILLed daemon's direct children, but not their children: those are
reparented to init and live on. The registry lists every live child's process group so that the
next supervisor on the same state directory can kill what is left of each group.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio

from agentd.supervisor._process import (
    KILL_WAIT_S,
    group_members,
    proc_stat,
    signal_group,
    wait_pids_gone,
)

__all__ = ["ChildRegistry", "RegistryEntry"]

logger = logging.getLogger("agentd.supervisor")


@dataclass(frozen=True)
class RegistryEntry:
    """One live child as written to the registry file."""

    name: str
    pid: int
    pgid: int
    start_ticks: int | None


class ChildRegistry:
    """A JSON file listing live children, rewritten atomically on every spawn and exit."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._entries: dict[int, RegistryEntry] = {}

    @property
    def path(self) -> Path:
        """Where the registry lives."""
        return self._path

    def add(self, entry: RegistryEntry) -> None:
        """Record a newly spawned child."""
        self._entries[entry.pid] = entry
        self._write()

    def remove(self, pid: int) -> None:
        """Forget a child whose process group is gone."""
        if self._entries.pop(pid, None) is not None:
            self._write()

    def load(self) -> list[RegistryEntry]:
        """The entries a previous supervisor left; an unreadable file counts as empty."""
        try:
            raw = json.loads(self._path.read_text())
            return [RegistryEntry(**item) for item in raw["children"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.error("ignoring unreadable child registry %s: %s", self._path, exc)
            return []

    async def reap_orphans(self) -> list[int]:
        """Kill every process group a previous supervisor left, then reset the file.

        A group is ours when its leader still exists with the recorded start time (a reused pid
        has another), or when the leader is gone but processes of its session remain: the kernel
        does not hand out a pid as long as it still names a process group, so those survivors are
        the grandchildren a PDEATHSIG-killed child left behind. Returns the pids killed.
        """
        killed: list[int] = []
        for entry in self.load():
            victims = _orphans_of(entry)
            if not victims:
                continue
            logger.warning(
                "killing %d orphaned process(es) of child %r (group %d) from a previous run",
                len(victims),
                entry.name,
                entry.pgid,
            )
            signal_group(entry.pgid, signal.SIGKILL)
            with anyio.move_on_after(KILL_WAIT_S) as scope:
                await wait_pids_gone(victims)
            if scope.cancelled_caught:
                logger.error("orphans of %r survived SIGKILL for %.0fs", entry.name, KILL_WAIT_S)
            killed.extend(victims)
        self._entries.clear()
        self._write()
        return killed

    def _write(self) -> None:
        # Write-then-rename, so a supervisor killed mid-write leaves the old or the new file, never
        # half of one. No fsync: a daemon crash keeps the page cache, and after a power loss no
        # child is left to reap.
        tmp = self._path.with_name(self._path.name + ".tmp")
        data = {"children": [asdict(e) for e in self._entries.values()]}
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            os.replace(tmp, self._path)
        except OSError as exc:
            logger.error("cannot write child registry %s: %s", self._path, exc)


def _orphans_of(entry: RegistryEntry) -> list[int]:
    """The live pids of `entry`'s group that are safe to kill (see reap_orphans)."""
    leader = proc_stat(entry.pid)
    if leader is not None and (
        leader.pgrp != entry.pgid
        or (entry.start_ticks is not None and leader.start_ticks != entry.start_ticks)
    ):
        return []  # the pid now belongs to an unrelated process
    members = group_members(entry.pgid) or []
    return [
        m.pid
        for m in members
        if m.alive
        and m.session == entry.pgid
        # Nothing started before the child can be in its session.
        and (entry.start_ticks is None or m.start_ticks >= entry.start_ticks)
    ]
