"""OS processes: spawn in a new process group, signal the group, wait for the group to be gone.

Children are spawned with asyncio's subprocess API (anyio's has no `preexec_fn`) so that each one
asks the kernel for SIGKILL when its parent dies. Output goes to a pipe this module creates itself,
not one asyncio manages: asyncio's `wait()` would otherwise wait for the pipe to close too, and a
grandchild that keeps it open would hang the wait long after the child itself exited.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

__all__ = [
    "ChildProcess",
    "ProcStat",
    "describe_returncode",
    "group_members",
    "proc_stat",
    "signal_group",
    "spawn_child",
    "split_returncode",
    "wait_pids_gone",
]

logger = logging.getLogger("agentd.supervisor")

_PR_SET_PDEATHSIG = 1
_PROC = Path("/proc")
# How long to wait for a process to die after SIGKILL. SIGKILL cannot be caught, so this only runs
# out for a process stuck in uninterruptible sleep (D state), e.g. on a hung NFS or GPU driver.
KILL_WAIT_S = 5.0
# Polling interval, only where pidfd_open is unavailable (non-Linux, old kernels).
_POLL_S = 0.02


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat the supervisor needs."""

    pid: int
    state: str
    pgrp: int
    session: int
    start_ticks: int

    @property
    def alive(self) -> bool:
        """False for a zombie (dead, not yet reaped) or a dead process."""
        return self.state not in ("Z", "X", "x")


def proc_stat(pid: int) -> ProcStat | None:
    """Parse /proc/PID/stat, or None if that process does not exist (or there is no /proc)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may itself contain spaces and parentheses.
    rest = raw[raw.rfind(b")") + 2 :].split()
    try:
        # Fields 3 (state), 5 (pgrp), 6 (session) and 22 (starttime) of proc(5).
        return ProcStat(pid, rest[0].decode(), int(rest[2]), int(rest[3]), int(rest[19]))
    except (IndexError, ValueError):
        return None


def group_members(pgid: int) -> list[ProcStat] | None:
    """Every process (zombies included) whose process group is `pgid`; None without /proc."""
    try:
        names = os.listdir(_PROC)
    except OSError:
        return None
    members = []
    for entry in names:
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None and stat.pgrp == pgid:
                members.append(stat)
    return members


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its uid (setuid helper); the rest of the group still got the signal.
        logger.warning("not allowed to signal every process in group %d", pgid)
    return True


async def wait_pids_gone(pids: Sequence[int]) -> None:
    """Return once none of `pids` is alive (dead or zombie). Callers bound this with a deadline."""
    for pid in pids:
        await _wait_pid_gone(pid)


async def _wait_pid_gone(pid: int) -> None:
    pidfd_open: Callable[[int], int] | None = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            fd = pidfd_open(pid)
        except ProcessLookupError:
            return
        except OSError:
            pass
        else:
            try:
                # A pidfd turns readable when the process terminates, reaped or not.
                await anyio.wait_readable(fd)
            finally:
                os.close(fd)
            return
    # No pidfd: nothing signals the death of a process that is not our child, so poll.
    while _pid_alive(pid):  # noqa: ASYNC110
        await anyio.sleep(_POLL_S)


def _pid_alive(pid: int) -> bool:
    stat = proc_stat(pid)
    if stat is not None:
        return stat.alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return sys.platform != "linux"  # on Linux no /proc entry means gone


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn making the child SIGKILLed when its parent dies (Linux), else None."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        # PDEATHSIG fires when the thread that forked dies: the event loop's thread here.
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class ChildProcess:
    """A spawned child: the leader of its own process group and session."""

    pid: int
    start_ticks: int | None
    output_fd: int
    _process: asyncio.subprocess.Process = field(repr=False)

    @property
    def pgid(self) -> int:
        """The child's process group id, which is its pid (it leads a new session)."""
        return self.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code, or minus the signal number that killed it."""
        return self._process.returncode

    async def wait(self) -> int:
        """Wait for the leader to exit (the child is reaped here) and return its returncode."""
        return await self._process.wait()

    def kill_group(self) -> None:
        """SIGKILL every process in the child's group, leader or leftover."""
        signal_group(self.pgid, signal.SIGKILL)

    def live_members(self) -> list[int]:
        """Live processes still in the child's group (leader included while it runs)."""
        members = group_members(self.pgid)
        if members is None:  # no /proc: only the leader can be seen
            return [self.pid] if self.returncode is None else []
        return [m.pid for m in members if m.alive and m.session == self.pgid]

    async def kill(self) -> int | None:
        """SIGKILL the whole group (leader and leftovers) and wait for it to be gone.

        Returns the leader's returncode, or None if it survived SIGKILL for KILL_WAIT_S (a process
        in uninterruptible sleep).
        """
        members = self.live_members()
        if self.returncode is not None:
            if not members:
                return self.returncode
            logger.warning(
                "pid %d exited; killing %d leftover process(es) of its group",
                self.pid,
                len(members),
            )
        self.kill_group()
        with anyio.move_on_after(KILL_WAIT_S):
            await self.wait()
            await self._wait_group_gone()
        return self.returncode

    async def terminate(self, grace_s: float) -> int | None:
        """SIGTERM the group, wait up to `grace_s` for all of it, then SIGKILL what is left.

        Waits for the whole group, not just the leader, so that grandchildren (vLLM's engine
        processes) get their grace period too. Returns what `kill()` returns.
        """
        if self.returncode is None or self.live_members():
            signal_group(self.pgid, signal.SIGTERM)
            with anyio.move_on_after(grace_s):
                await self.wait()
                await self._wait_group_gone()
            if self.returncode is None:
                logger.warning("pid %d outlived its %.1fs grace: SIGKILL", self.pid, grace_s)
        return await self.kill()

    async def _wait_group_gone(self) -> None:
        # Members can fork while we wait, so look again until the group is empty.
        while members := self.live_members():
            await wait_pids_gone(members)

    def close_output(self) -> None:
        """Close the read end of the output pipe (idempotent)."""
        if self.output_fd >= 0:
            os.close(self.output_fd)
            self.output_fd = -1


async def spawn_child(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    cwd: str | Path | None,
    stdin_data: bytes | None = None,
) -> ChildProcess:
    """Start `argv` as the leader of a new session, stdout+stderr into a pipe we read, and
    `stdin_data` (at most a pipe's buffer, 64 KiB) on its stdin, else /dev/null.

    Raises OSError if the program cannot be started (not found, not executable, bad cwd).
    """
    full_env = None if env is None else {**os.environ, **env}
    stdin: int = asyncio.subprocess.DEVNULL
    if stdin_data is not None:
        if len(stdin_data) > 65536:
            raise OSError(f"stdin_data of {len(stdin_data)} bytes does not fit a pipe's buffer")
        stdin, feed = os.pipe()
        try:
            os.write(feed, stdin_data)  # fits the buffer: never blocks
        finally:
            os.close(feed)
    read_fd, write_fd = os.pipe()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=write_fd,
            stderr=write_fd,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_pdeathsig_preexec(),
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        # The child holds its own copy; ours would keep the pipe open after the child's death.
        os.close(write_fd)
        if stdin_data is not None:
            os.close(stdin)
    os.set_blocking(read_fd, False)
    stat = proc_stat(process.pid)
    return ChildProcess(
        pid=process.pid,
        start_ticks=None if stat is None else stat.start_ticks,
        output_fd=read_fd,
        _process=process,
    )


def split_returncode(returncode: int | None) -> tuple[int | None, int | None]:
    """(exit code, signal) from asyncio's returncode, which is minus the signal number."""
    if returncode is None:
        return None, None
    if returncode < 0:
        return None, -returncode
    return returncode, None


def describe_returncode(returncode: int | None) -> str:
    """How a process ended, in words that read after its name ("... exited with code 3")."""
    if returncode is None:
        return "did not die after SIGKILL"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"
