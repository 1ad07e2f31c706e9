"""Stopping: SIGTERM then SIGKILL to the whole group, shutdown order, cancellation."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from agentd.supervisor import ChildEventKind, ChildInfo, ChildSpec, ChildState, Supervisor
from tests.supervisor.helpers import EventLog, child_argv, file_exists, pid_alive

pytestmark = pytest.mark.anyio


async def test_stop_sends_sigterm_and_forgets_the_child(
    supervisor: Supervisor, events: EventLog
) -> None:
    info = await supervisor.start(ChildSpec(name="s", argv=child_argv()))
    assert info.pid is not None
    with anyio.fail_after(5):
        await supervisor.stop("s")
    assert not pid_alive(info.pid)
    (stop,) = events.of(ChildEventKind.STOP, "s")
    assert stop.signal == signal.SIGTERM and stop.pid == info.pid
    assert supervisor.children() == []
    assert events.kinds("s") == ["spawn", "ready", "stop"]


async def test_stop_escalates_to_sigkill_after_the_grace(
    supervisor: Supervisor, events: EventLog, tmp_path: Path
) -> None:
    ready_file = tmp_path / "ready"
    info = await supervisor.start(
        ChildSpec(
            name="stubborn",
            argv=child_argv("--ignore-term", "--ready-file", str(ready_file)),
            ready=file_exists(ready_file),  # SIGTERM is ignored from then on
            stop_grace_s=0.5,
        )
    )
    assert info.pid is not None
    began = anyio.current_time()
    await supervisor.stop("stubborn")
    took = anyio.current_time() - began
    assert 0.5 <= took < 0.5 + 2.0, took
    assert not pid_alive(info.pid)
    (stop,) = events.of(ChildEventKind.STOP, "stubborn")
    assert stop.signal == signal.SIGKILL


async def test_stop_grace_can_be_overridden(supervisor: Supervisor, tmp_path: Path) -> None:
    ready_file = tmp_path / "ready"
    spec = ChildSpec(
        name="stubborn",
        argv=child_argv("--ignore-term", "--ready-file", str(ready_file)),
        ready=file_exists(ready_file),
        stop_grace_s=30,
    )
    await supervisor.start(spec)
    with anyio.fail_after(2):
        await supervisor.stop("stubborn", grace_s=0.2)


async def test_stop_kills_a_grandchild_in_the_group(
    supervisor: Supervisor, tmp_path: Path, extra_pids: list[int]
) -> None:
    pidfile = tmp_path / "grandchild"
    info = await supervisor.start(
        ChildSpec(
            name="parent",
            argv=child_argv("--grandchild", str(pidfile)),
            ready=file_exists(pidfile),
        )
    )
    grandchild = int(pidfile.read_text())
    extra_pids.append(grandchild)
    assert pid_alive(grandchild)
    assert os.getpgid(grandchild) == info.pid
    await supervisor.stop("parent")
    # stop() returns only once the whole group is gone.
    assert not pid_alive(grandchild)


async def test_grandchild_left_by_an_exiting_child_is_killed(
    supervisor: Supervisor, events: EventLog, tmp_path: Path, extra_pids: list[int]
) -> None:
    from agentd.supervisor import RestartPolicy, RestartType

    pidfile = tmp_path / "grandchild"
    await supervisor.start(
        ChildSpec(
            name="leaver",
            argv=child_argv("--grandchild", str(pidfile), "--exit-after", "0.2"),
            ready=file_exists(pidfile),
            restart=RestartPolicy(type=RestartType.TEMPORARY),
        )
    )
    grandchild = int(pidfile.read_text())
    extra_pids.append(grandchild)
    await events.wait_for(ChildEventKind.EXIT, "leaver")
    assert not pid_alive(grandchild)


async def test_shutdown_stops_children_in_reverse_start_order(
    events: EventLog, extra_pids: list[int]
) -> None:
    async with Supervisor(on_event=events) as supervisor:
        for name in ("bus", "model", "worker"):
            await supervisor.start(ChildSpec(name=name, argv=child_argv()))
        pids = [c.pid for c in supervisor.children()]
    assert [e.name for e in events.of(ChildEventKind.STOP)] == ["worker", "model", "bus"]
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert [c.state for c in supervisor.children()] == [ChildState.STOPPED] * 3


async def test_child_exiting_during_shutdown_is_not_restarted(
    events: EventLog, extra_pids: list[int], tmp_path: Path
) -> None:
    # Shutdown stops "last" first; it survives SIGTERM for its grace but drops a file on it,
    # and "first" exits as soon as it sees that file: on its own, in the middle of the shutdown.
    ready_file, term_file = tmp_path / "ready", tmp_path / "sigterm-seen"
    async with Supervisor(on_event=events) as supervisor:
        await supervisor.start(
            ChildSpec(name="first", argv=child_argv("--exit-on-file", str(term_file)))
        )
        await supervisor.start(
            ChildSpec(
                name="last",
                argv=child_argv("--term-touch", str(term_file), "--ready-file", str(ready_file)),
                ready=file_exists(ready_file),
                stop_grace_s=1.0,
            )
        )
    assert term_file.exists()
    assert events.kinds("first") == ["spawn", "ready", "exit"]
    assert events.of(ChildEventKind.EXIT, "first")[0].exit_code == 0
    assert supervisor.info("first").state is ChildState.EXITED
    (last_stop,) = events.of(ChildEventKind.STOP, "last")
    assert last_stop.signal == signal.SIGKILL


async def test_cancelling_run_stops_every_child(events: EventLog, extra_pids: list[int]) -> None:
    supervisor = Supervisor(on_event=events)
    infos: list[ChildInfo] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            for name in ("a", "b"):
                infos.append(await supervisor.start(ChildSpec(name=name, argv=child_argv())))
            tg.cancel_scope.cancel()
    for info in infos:
        assert info.pid is not None and not pid_alive(info.pid)
    assert sorted(e.name for e in events.of(ChildEventKind.STOP)) == ["a", "b"]
    assert all(e.reason == "supervisor torn down" for e in events.of(ChildEventKind.STOP))
    await supervisor.shutdown()  # still fine afterwards


async def test_cancelled_start_leaves_no_child(
    supervisor: Supervisor, events: EventLog, tmp_path: Path
) -> None:
    with anyio.move_on_after(0.3):
        await supervisor.start(
            ChildSpec(name="pending", argv=child_argv(), ready=file_exists(tmp_path / "never"))
        )
    (stop,) = await events.wait_for(ChildEventKind.STOP, "pending")
    (spawn,) = events.of(ChildEventKind.SPAWN, "pending")
    assert spawn.pid is not None and not pid_alive(spawn.pid)
    assert supervisor.children() == []
    assert stop.pid == spawn.pid
