"""One supervised child: spawn, probe, watch, end, and decide whether to start it again."""

from __future__ import annotations

import logging
import os
import random
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio

from agentd.errors import WorkerCrashed
from agentd.supervisor._intensity import RestartIntensity
from agentd.supervisor._logfile import OutputCapture, RotatingLineWriter
from agentd.supervisor._probes import liveness_problem, ready_problem
from agentd.supervisor._process import (
    KILL_WAIT_S,
    ChildProcess,
    describe_returncode,
    spawn_child,
    split_returncode,
)
from agentd.supervisor._registry import ChildRegistry, RegistryEntry
from agentd.supervisor._spec import (
    ChildEvent,
    ChildEventKind,
    ChildInfo,
    ChildSpec,
    ChildState,
    RestartType,
)

__all__ = ["ChildRunner"]

logger = logging.getLogger("agentd.supervisor")

EmitEvent = Callable[[ChildEvent], Awaitable[None]]

# Once the group is gone the pipe is at EOF, unless a process escaped the group (setsid) and keeps
# it open: read what is buffered, but do not wait on such a process.
_DRAIN_S = 1.0
_READ_BYTES = 65536
_TEARDOWN_MARGIN_S = 10.0


@dataclass(frozen=True)
class _Verdict:
    """Why the watch over one process ended; the first of these to happen wins."""

    kind: Literal["exited", "stop", "not_ready", "unhealthy"]
    detail: str = ""


@dataclass(frozen=True)
class _Ending:
    """How one process ended."""

    reason: str
    abnormal: bool
    ran_s: float
    stopped: bool


class ChildRunner:
    """Runs one child for its whole supervised life, across restarts.

    `run()` never raises (but for cancellation): whatever happens to this child, its siblings and
    the supervisor carry on.
    """

    def __init__(
        self,
        spec: ChildSpec,
        *,
        emit: EmitEvent,
        registry: ChildRegistry | None,
        shutdown_started: anyio.Event,
        rng: random.Random,
    ) -> None:
        self.spec = spec
        self.finished = anyio.Event()
        self.remove_when_finished = False
        self._emit_event = emit
        self._registry = registry
        self._shutdown_started = shutdown_started
        writer = None
        if spec.log_path is not None:
            writer = RotatingLineWriter(
                spec.log_path, max_bytes=spec.log_max_bytes, backups=spec.log_backups
            )
        self._output = OutputCapture(writer)
        self._state = ChildState.STARTING
        self._pid: int | None = None
        self._started_at: float | None = None
        self._restarts = 0
        self._last_exit_code: int | None = None
        self._last_signal: int | None = None
        self._last_error: str | None = None
        self._stop_requested = anyio.Event()
        self._stop_grace_s = spec.stop_grace_s
        self._ever_ready = False
        self._first_ready = anyio.Event()
        self._first_ready_info: ChildInfo | None = None
        self._first_error: str | None = None
        self._intensity = RestartIntensity(spec.restart, rng)

    def info(self) -> ChildInfo:
        """A snapshot of this child now."""
        return ChildInfo(
            name=self.spec.name,
            state=self._state,
            pid=self._pid,
            started_at=self._started_at,
            restarts=self._restarts,
            last_exit_code=self._last_exit_code,
            last_signal=self._last_signal,
            last_error=self._last_error,
            last_line=self._output.last_line,
            spec=self.spec,
        )

    def request_stop(self, grace_s: float | None = None) -> None:
        """Ask the child to stop for good (no restart); `finished` is set once it has."""
        if grace_s is not None:
            self._stop_grace_s = grace_s
        self._stop_requested.set()

    async def wait_ready(self) -> ChildInfo:
        """Wait until the first process is ready; WorkerCrashed if it ends before that."""
        await self._first_ready.wait()
        if self._first_ready_info is None:
            raise WorkerCrashed(self._first_error or f"child {self.spec.name!r} did not start")
        return self._first_ready_info

    async def run(self) -> None:
        """Supervise the child until it is stopped, given up on, or not to be restarted."""
        try:
            await self._supervise()
        except Exception as exc:  # a bug here must not take the siblings down with it
            logger.exception("supervising child %r failed", self.spec.name)
            self._state = ChildState.FAILED
            self._last_error = f"supervisor error: {exc!r}"
        finally:
            self._pid = None
            self._output.close()
            if not self._first_ready.is_set():
                self._first_error = self._first_error or (
                    f"child {self.spec.name!r} was stopped before it was ready"
                )
                self.remove_when_finished = True
                self._first_ready.set()
            self.finished.set()

    async def _supervise(self) -> None:
        while True:
            ending = await self._run_once()
            if not self._ever_ready:
                message = f"child {self.spec.name!r} did not become ready: it {ending.reason}"
                if self._output.last_line:
                    message += f"; its last output line: {self._output.last_line!r}"
                self._first_error = message
                self._state = ChildState.STOPPED if ending.stopped else ChildState.EXITED
                return
            if ending.stopped:
                return
            if self._stop_requested.is_set():  # it ended on its own just as stop() was called
                self._state = ChildState.STOPPED
                return
            if self._shutdown_started.is_set() or not self._restart_wanted(ending):
                self._state = ChildState.EXITED
                return
            if not await self._back_off(ending):
                return

    def _restart_wanted(self, ending: _Ending) -> bool:
        kind = self.spec.restart.type
        if kind is RestartType.TEMPORARY:
            return False
        return kind is RestartType.PERMANENT or ending.abnormal

    async def _back_off(self, ending: _Ending) -> bool:
        """Check restart intensity, wait out the backoff; False if the child is not restarted."""
        policy = self.spec.restart
        delay = self._intensity.next_delay(now=anyio.current_time(), ran_s=ending.ran_s)
        if delay is None:
            self._state = ChildState.FAILED
            self._last_error = (
                f"gave up after {self._intensity.recent} restart(s) within "
                f"{policy.window_s:g}s (max_restarts={policy.max_restarts}); "
                f"its last process {ending.reason}"
            )
            await self._emit(ChildEventKind.FAILED, reason=self._last_error)
            return False
        self._state = ChildState.BACKOFF
        with anyio.move_on_after(delay):
            async with anyio.create_task_group() as tg:
                # Either a stop of this child or the supervisor's shutdown cuts the wait short.
                for event in (self._stop_requested, self._shutdown_started):
                    tg.start_soon(_set_then_cancel, event, tg.cancel_scope)
        if self._stop_requested.is_set() or self._shutdown_started.is_set():
            self._state = ChildState.STOPPED
            await self._emit(ChildEventKind.STOP, reason="stopped during restart backoff")
            return False
        self._restarts += 1
        await self._emit(
            ChildEventKind.RESTART,
            reason=f"restart {self._restarts} after {delay:.2f}s backoff; "
            f"the previous process {ending.reason}",
        )
        return True

    async def _run_once(self) -> _Ending:
        """Spawn one process and see it through to its end."""
        spec = self.spec
        try:
            proc = await spawn_child(
                spec.argv, env=spec.env, cwd=spec.cwd, stdin_data=spec.stdin_data
            )
        except OSError as exc:
            reason = f"could not be started ({spec.argv[0]!r}: {exc})"
            self._last_error = reason
            self._last_exit_code = self._last_signal = None
            self._state = ChildState.EXITED
            await self._emit(ChildEventKind.EXIT, reason=reason)
            return _Ending(reason, abnormal=True, ran_s=0.0, stopped=False)
        self._pid = proc.pid
        self._started_at = time.time()
        started = anyio.current_time()
        self._state = ChildState.STARTING
        if self._registry is not None:
            self._registry.add(RegistryEntry(spec.name, proc.pid, proc.pgid, proc.start_ticks))
        ending: _Ending | None = None
        try:
            await self._emit(ChildEventKind.SPAWN, pid=proc.pid, reason=shlex.join(spec.argv))
            async with anyio.create_task_group() as io_tg:
                pumped = anyio.Event()
                io_tg.start_soon(self._pump_output, proc, pumped)
                verdict = await self._watch(proc)
                returncode, reason = await self._end(proc, verdict)
                ran_s = anyio.current_time() - started
                # Read the output to its end first, so that last_line is final in the event.
                with anyio.move_on_after(_DRAIN_S):
                    await pumped.wait()
                io_tg.cancel_scope.cancel()
            self._output.flush()
            ending = await self._report_end(proc.pid, verdict, returncode, reason, ran_s)
        finally:
            if ending is None:
                # Cancelled (the supervisor is being torn down) or a bug: never leave it behind.
                # terminate() bounds itself; the deadline is a backstop against a hung handler.
                budget_s = self._stop_grace_s + 2 * KILL_WAIT_S + _TEARDOWN_MARGIN_S
                with anyio.CancelScope(shield=True, deadline=anyio.current_time() + budget_s):
                    await self._stop_on_teardown(proc)
            proc.close_output()
            if self._registry is not None:
                self._registry.remove(proc.pid)
            self._pid = None
        assert ending is not None  # the finally above only skips this by raising
        return ending

    async def _stop_on_teardown(self, proc: ChildProcess) -> None:
        self._state = ChildState.STOPPING
        returncode = await proc.terminate(self._stop_grace_s)
        self._record_exit(returncode)
        self._state = ChildState.STOPPED
        await self._emit(
            ChildEventKind.STOP, pid=proc.pid, reason="supervisor torn down", returncode=returncode
        )

    async def _watch(self, proc: ChildProcess) -> _Verdict:
        verdict: _Verdict | None = None

        async with anyio.create_task_group() as tg:

            def decide(found: _Verdict) -> None:
                nonlocal verdict
                if verdict is None:
                    verdict = found
                    tg.cancel_scope.cancel()

            async def exited() -> None:
                await proc.wait()
                decide(_Verdict("exited"))

            async def stop_requested() -> None:
                await self._stop_requested.wait()
                decide(_Verdict("stop"))

            tg.start_soon(exited)
            tg.start_soon(stop_requested)
            tg.start_soon(self._probe, decide)
        assert verdict is not None
        return verdict

    async def _probe(self, decide: Callable[[_Verdict], None]) -> None:
        """Ready probe, then liveness probes until enough fail in a row."""
        spec = self.spec
        if spec.ready is not None:
            problem = await ready_problem(spec.ready, self.info(), timeout_s=spec.ready_timeout_s)
            if problem is not None:
                decide(_Verdict("not_ready", problem))
                return
        self._state = ChildState.RUNNING
        self._ever_ready = True
        await self._emit(ChildEventKind.READY, pid=self._pid, reason="ready")
        if not self._first_ready.is_set():
            self._first_ready_info = self.info()
            self._first_ready.set()
        if spec.liveness is None:
            return
        failures = 0
        while True:
            await anyio.sleep(spec.liveness_interval_s)
            problem = await liveness_problem(
                spec.liveness, self.info(), timeout_s=spec.liveness_timeout_s
            )
            if problem is None:
                failures = 0
                continue
            failures += 1
            logger.warning(
                "child %r liveness %d/%d: %s", spec.name, failures, spec.liveness_failures, problem
            )
            if failures >= spec.liveness_failures:
                decide(_Verdict("unhealthy", f"{failures} liveness failures, last: {problem}"))
                return

    async def _end(self, proc: ChildProcess, verdict: _Verdict) -> tuple[int | None, str]:
        """End the process as the verdict says and wait for its group: (returncode, reason)."""
        if verdict.kind == "exited":
            returncode = await proc.kill()  # its leftovers, if any: the process itself is gone
            return returncode, describe_returncode(returncode)
        if verdict.kind == "unhealthy":
            await self._emit(ChildEventKind.UNHEALTHY, pid=proc.pid, reason=verdict.detail)
            returncode = await proc.kill()  # a hung process would not heed SIGTERM
            return returncode, f"was killed as unhealthy ({verdict.detail})"
        self._state = ChildState.STOPPING
        if verdict.kind == "stop":
            return await proc.terminate(self._stop_grace_s), "was stopped"
        return await proc.terminate(self.spec.stop_grace_s), verdict.detail

    async def _report_end(
        self, pid: int, verdict: _Verdict, returncode: int | None, reason: str, ran_s: float
    ) -> _Ending:
        stopped = verdict.kind == "stop"
        abnormal = verdict.kind in ("not_ready", "unhealthy") or returncode != 0
        self._record_exit(returncode)
        self._pid = None
        if stopped:
            self._state = ChildState.STOPPED
            kind = ChildEventKind.STOP
        else:
            # Provisional: the restart decision may turn this into BACKOFF or FAILED.
            self._state = ChildState.EXITED
            kind = ChildEventKind.EXIT
            if abnormal:
                self._last_error = reason
        await self._emit(kind, pid=pid, reason=reason, returncode=returncode)
        return _Ending(reason, abnormal=abnormal, ran_s=ran_s, stopped=stopped)

    def _record_exit(self, returncode: int | None) -> None:
        self._last_exit_code, self._last_signal = split_returncode(returncode)

    async def _pump_output(self, proc: ChildProcess, pumped: anyio.Event) -> None:
        try:
            while True:
                await anyio.wait_readable(proc.output_fd)
                try:
                    chunk = os.read(proc.output_fd, _READ_BYTES)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                self._output.feed(chunk)
        except OSError as exc:
            logger.error("reading output of child %r failed: %s", self.spec.name, exc)
        finally:
            pumped.set()

    async def _emit(
        self,
        kind: ChildEventKind,
        *,
        reason: str,
        pid: int | None = None,
        returncode: int | None = None,
    ) -> None:
        exit_code, sig = split_returncode(returncode)
        event = ChildEvent(
            kind, self.spec.name, pid, time.time(), exit_code, sig, reason, self._restarts
        )
        # An event half-delivered because the watch it came from was cancelled would be lost.
        with anyio.CancelScope(shield=True):
            await self._emit_event(event)


async def _set_then_cancel(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
