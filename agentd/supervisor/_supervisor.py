"""The supervisor: starts, watches, restarts and stops OS processes it knows nothing about."""

from __future__ import annotations

import contextlib
import inspect
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Literal

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agentd.errors import WorkerCrashed
from agentd.supervisor._child import ChildRunner
from agentd.supervisor._process import KILL_WAIT_S
from agentd.supervisor._registry import ChildRegistry
from agentd.supervisor._spec import ChildEvent, ChildEventKind, ChildInfo, ChildSpec

__all__ = ["Supervisor"]

logger = logging.getLogger("agentd.supervisor")

# A slow on_event handler delays its child's supervision; past this it is abandoned.
_EVENT_TIMEOUT_S = 5.0
_EVENT_LOG_LEVELS = {
    ChildEventKind.EXIT: logging.WARNING,
    ChildEventKind.UNHEALTHY: logging.WARNING,
    ChildEventKind.FAILED: logging.ERROR,
}


class Supervisor:
    """Supervises child processes the way OTP supervisors and systemd do.

    Each child runs in its own process group and session, dies with the daemon (PDEATHSIG on
    Linux), is restarted according to its `RestartPolicy` with exponential backoff, is given up on
    (FAILED) past its restart intensity, and is killed and restarted when its liveness probe fails.
    With `registry_path`, live children are recorded on disk so that the next supervisor kills
    whatever a SIGKILLed one left behind.

    ```python
    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(on_event=print, registry_path=state_dir / "children.json")
        await tg.start(supervisor.run)
        await supervisor.start(ChildSpec(name="nats", argv=["nats-server", "-js"]))
        ...
        await supervisor.shutdown()
    ```

    `on_event` receives every `ChildEvent`; it may be sync or return an awaitable, which is
    awaited (so keep it quick, and never await `shutdown()` from it). Its exceptions are logged.
    """

    def __init__(
        self,
        *,
        on_event: Callable[[ChildEvent], object] | None = None,
        registry_path: Path | None = None,
    ) -> None:
        self._on_event = on_event
        self._registry = None if registry_path is None else ChildRegistry(registry_path)
        self._children: dict[str, ChildRunner] = {}
        self._task_group: TaskGroup | None = None
        self._phase: Literal["new", "running", "done"] = "new"
        self._shutdown_requested = anyio.Event()
        self._shutdown_started = anyio.Event()
        self._finished = anyio.Event()
        self._rng = random.Random()
        self._exit_stack: contextlib.AsyncExitStack | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reap orphans of a previous run, report started, then supervise until `shutdown()`.

        On the way out every child is stopped, in reverse start order, each within its grace
        period. If `run()` is cancelled instead, all children are stopped at once.
        """
        if self._phase != "new":
            raise RuntimeError("Supervisor.run() can only be called once")
        self._phase = "running"
        try:
            if self._registry is not None:
                await self._registry.reap_orphans()
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                task_status.started()
                try:
                    await self._shutdown_requested.wait()
                finally:
                    self._shutdown_started.set()
                    with anyio.CancelScope(shield=True) as scope:
                        scope.deadline = anyio.current_time() + self._stop_budget_s()
                        await self._stop_all()
                    if scope.cancelled_caught:
                        logger.error("children did not all stop within their grace periods")
                    tg.cancel_scope.cancel()
        finally:
            self._task_group = None
            self._phase = "done"
            self._finished.set()

    async def start(self, spec: ChildSpec) -> ChildInfo:
        """Spawn a child and wait until it is ready (its ready probe passed, if it has one).

        Raises WorkerCrashed if it exits, fails its probe or times out first; it is then stopped,
        not restarted, and forgotten. Raises ValueError if a child of that name is supervised
        (one that has EXITED or FAILED is replaced), RuntimeError if `run()` is not running.
        If the caller is cancelled meanwhile, the child is stopped.
        """
        task_group = self._task_group
        if task_group is None or self._shutdown_started.is_set():
            raise RuntimeError("the supervisor is not running: start run() first")
        current = self._children.get(spec.name)
        if current is not None:
            if not current.finished.is_set():
                raise ValueError(f"a child named {spec.name!r} is already supervised")
            del self._children[spec.name]
        runner = ChildRunner(
            spec,
            emit=self._emit,
            registry=self._registry,
            shutdown_started=self._shutdown_started,
            rng=self._rng,
        )
        self._children[spec.name] = runner
        task_group.start_soon(self._supervise, runner, name=f"supervise {spec.name}")
        ready = False
        try:
            info = await runner.wait_ready()
            ready = True
            return info
        except WorkerCrashed:
            await runner.finished.wait()
            raise
        finally:
            if not ready:
                runner.request_stop()

    async def stop(self, name: str, *, grace_s: float | None = None) -> None:
        """Stop a child for good: SIGTERM its group, SIGKILL after the grace; then forget it.

        `grace_s` overrides the spec's `stop_grace_s`. Raises KeyError for an unknown name.
        """
        runner = self._runner(name)
        runner.remove_when_finished = True
        runner.request_stop(grace_s)
        await runner.finished.wait()
        if self._children.get(name) is runner:
            del self._children[name]

    async def restart(self, name: str) -> ChildInfo:
        """Operator restart: stop the child, then start it again with the same spec.

        The restart counters and intensity start afresh, so this also revives a FAILED child.
        It keeps its place in the shutdown order.
        """
        runner = self._runner(name)
        position = list(self._children).index(name)
        await self.stop(name)
        await self._emit(
            ChildEvent(
                ChildEventKind.RESTART, name, None, time.time(), None, None, "operator restart", 0
            )
        )
        info = await self.start(runner.spec)
        order = [n for n in self._children if n != name]
        order.insert(min(position, len(order)), name)
        self._children = {n: self._children[n] for n in order}
        return info

    def info(self, name: str) -> ChildInfo:
        """A snapshot of one child; KeyError for an unknown name."""
        return self._runner(name).info()

    def children(self) -> list[ChildInfo]:
        """Snapshots of every child, in start order (stopped ones are forgotten)."""
        return [runner.info() for runner in self._children.values()]

    async def shutdown(self) -> None:
        """Stop every child and end `run()`; returns once done. Safe before `run()` and twice."""
        self._shutdown_requested.set()
        if self._phase == "running":
            await self._finished.wait()

    async def __aenter__(self) -> Supervisor:
        async with contextlib.AsyncExitStack() as stack:
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self.run)
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        stack, self._exit_stack = self._exit_stack, None
        self._shutdown_requested.set()
        if stack is not None:
            # Not handing the body's exception to the task group: run() stops the children in
            # order either way, and the caller gets its own exception back, not a group of it.
            await stack.aclose()
        return False

    def _runner(self, name: str) -> ChildRunner:
        try:
            return self._children[name]
        except KeyError:
            raise KeyError(f"no child named {name!r}") from None

    async def _supervise(self, runner: ChildRunner) -> None:
        try:
            await runner.run()
        finally:
            name = runner.spec.name
            if runner.remove_when_finished and self._children.get(name) is runner:
                del self._children[name]

    async def _stop_all(self) -> None:
        for runner in reversed(list(self._children.values())):
            runner.request_stop()
            await runner.finished.wait()

    def _stop_budget_s(self) -> float:
        return sum(r.spec.stop_grace_s + 2 * KILL_WAIT_S for r in self._children.values()) + 1.0

    async def _emit(self, event: ChildEvent) -> None:
        level = _EVENT_LOG_LEVELS.get(event.kind, logging.INFO)
        if event.kind is ChildEventKind.EXIT and event.exit_code == 0:
            level = logging.INFO
        logger.log(
            level, "child %r %s (pid %s): %s", event.name, event.kind, event.pid, event.reason
        )
        if self._on_event is None:
            return
        try:
            result = self._on_event(event)
            if inspect.isawaitable(result):
                with anyio.move_on_after(_EVENT_TIMEOUT_S) as scope:
                    await result
                if scope.cancelled_caught:
                    logger.error("on_event handler took over %.0fs for %s", _EVENT_TIMEOUT_S, event)
        except Exception:
            logger.exception("on_event handler failed for %s", event)
