"""start(): ready probes, failures before ready, names, and the supervisor's own lifecycle."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from agentd.errors import WorkerCrashed
from agentd.supervisor import (
    ChildEventKind,
    ChildInfo,
    ChildSpec,
    ChildState,
    RestartPolicy,
    RestartType,
    Supervisor,
)
from tests.supervisor.helpers import EventLog, child_argv, file_exists, pid_alive

pytestmark = pytest.mark.anyio


async def test_start_returns_running_child_once_ready(
    supervisor: Supervisor, events: EventLog, tmp_path: Path
) -> None:
    ready_file = tmp_path / "ready"
    info = await supervisor.start(
        ChildSpec(
            name="web",
            argv=child_argv("--ready-file", str(ready_file)),
            ready=file_exists(ready_file),
        )
    )
    assert info.state is ChildState.RUNNING
    assert info.pid is not None and pid_alive(info.pid)
    assert ready_file.read_text() == str(info.pid)
    assert events.kinds("web") == ["spawn", "ready"]
    assert [c.name for c in supervisor.children()] == ["web"]


async def test_ready_probe_timeout_raises_and_leaves_no_process(
    supervisor: Supervisor, events: EventLog
) -> None:
    async def never_ready(info: ChildInfo) -> None:
        await anyio.sleep_forever()

    spec = ChildSpec(
        name="slow", argv=child_argv(), ready=never_ready, ready_timeout_s=0.3, stop_grace_s=2
    )
    with pytest.raises(WorkerCrashed, match="did not pass its ready probe within 0.3s"):
        await supervisor.start(spec)
    (spawn,) = events.of(ChildEventKind.SPAWN, "slow")
    assert spawn.pid is not None and not pid_alive(spawn.pid)
    assert supervisor.children() == []
    assert events.kinds("slow") == ["spawn", "exit"]
    # The name is free again.
    info = await supervisor.start(ChildSpec(name="slow", argv=child_argv()))
    assert info.state is ChildState.RUNNING


async def test_failing_ready_probe_raises(supervisor: Supervisor) -> None:
    async def broken(info: ChildInfo) -> None:
        raise ConnectionRefusedError("port 8000")

    with pytest.raises(WorkerCrashed, match="ConnectionRefusedError: port 8000"):
        await supervisor.start(ChildSpec(name="c", argv=child_argv(), ready=broken))
    assert supervisor.children() == []


async def test_exit_before_ready_raises_with_last_line(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    spec = ChildSpec(
        name="crash",
        argv=child_argv("--say", "config invalid", "--exit-after", "0", "--code", "3"),
        ready=file_exists(tmp_path / "never"),
    )
    with pytest.raises(WorkerCrashed, match="exited with code 3.*'config invalid'"):
        await supervisor.start(spec)
    assert supervisor.children() == []


async def test_unstartable_program_raises(supervisor: Supervisor, tmp_path: Path) -> None:
    spec = ChildSpec(name="ghost", argv=[str(tmp_path / "no-such-program")])
    with pytest.raises(WorkerCrashed, match="could not be started"):
        await supervisor.start(spec)
    assert supervisor.children() == []


async def test_duplicate_name_is_refused(supervisor: Supervisor) -> None:
    await supervisor.start(ChildSpec(name="dup", argv=child_argv()))
    with pytest.raises(ValueError, match="already supervised"):
        await supervisor.start(ChildSpec(name="dup", argv=child_argv()))
    assert len(supervisor.children()) == 1


async def test_unknown_names_raise_key_error(supervisor: Supervisor) -> None:
    with pytest.raises(KeyError):
        supervisor.info("nobody")
    with pytest.raises(KeyError):
        await supervisor.stop("nobody")
    with pytest.raises(KeyError):
        await supervisor.restart("nobody")


async def test_env_and_cwd_reach_the_child(
    supervisor: Supervisor, events: EventLog, tmp_path: Path
) -> None:
    script = "import os; print(os.environ['AGENTD_TEST_VAR'], os.getcwd(), 'PATH' in os.environ)"
    info = await supervisor.start(
        ChildSpec(
            name="env",
            argv=[sys.executable, "-c", script],
            env={"AGENTD_TEST_VAR": "hello"},
            cwd=tmp_path,
            restart=RestartPolicy(type=RestartType.TEMPORARY),
        )
    )
    assert info.pid is not None
    (exit_event,) = await events.wait_for(ChildEventKind.EXIT, "env")
    assert exit_event.exit_code == 0
    assert supervisor.info("env").state is ChildState.EXITED
    assert supervisor.info("env").last_line == f"hello {tmp_path} True"


async def test_start_before_run_is_refused(events: EventLog) -> None:
    supervisor = Supervisor(on_event=events)
    with pytest.raises(RuntimeError, match="not running"):
        await supervisor.start(ChildSpec(name="x", argv=child_argv()))
    assert events.events == []


async def test_shutdown_before_run_and_twice() -> None:
    supervisor = Supervisor()
    await supervisor.shutdown()
    await supervisor.shutdown()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)  # returns at once: shutdown was already asked for
    with pytest.raises(RuntimeError, match="not running"):
        await supervisor.start(ChildSpec(name="x", argv=child_argv()))
    await supervisor.shutdown()
    with pytest.raises(RuntimeError, match="only be called once"):
        await supervisor.run()


async def test_shutdown_twice_while_running(events: EventLog, extra_pids: list[int]) -> None:
    async with anyio.create_task_group() as tg:
        supervisor = Supervisor(on_event=events)
        await tg.start(supervisor.run)
        info = await supervisor.start(ChildSpec(name="a", argv=child_argv()))
        assert info.pid is not None
        async with anyio.create_task_group() as callers:
            callers.start_soon(supervisor.shutdown)
            callers.start_soon(supervisor.shutdown)
        # Both returned only after the child was stopped.
        assert not pid_alive(info.pid)
        await supervisor.shutdown()
    assert events.kinds("a") == ["spawn", "ready", "stop"]


async def test_stop_during_start_fails_the_start(
    supervisor: Supervisor, events: EventLog, tmp_path: Path
) -> None:
    outcome: list[BaseException] = []

    async def starting() -> None:
        spec = ChildSpec(name="s", argv=child_argv(), ready=file_exists(tmp_path / "never"))
        try:
            await supervisor.start(spec)
        except WorkerCrashed as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(starting)
        (spawn,) = await events.wait_for(ChildEventKind.SPAWN, "s")
        await supervisor.stop("s")
    assert len(outcome) == 1 and "did not become ready: it was stopped" in str(outcome[0])
    assert spawn.pid is not None and not pid_alive(spawn.pid)
    assert supervisor.children() == []


async def test_error_in_the_body_stops_children_and_propagates(
    events: EventLog, extra_pids: list[int]
) -> None:
    with pytest.raises(LookupError, match="boom"):
        async with Supervisor(on_event=events) as supervisor:
            info = await supervisor.start(ChildSpec(name="a", argv=child_argv()))
            raise LookupError("boom")
    assert info.pid is not None and not pid_alive(info.pid)
    assert events.kinds("a") == ["spawn", "ready", "stop"]
