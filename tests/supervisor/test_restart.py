"""Restart types, backoff, restart intensity and operator restarts, with real child processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

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

FAST = RestartPolicy(backoff_initial_s=0.05, backoff_max_s=0.05, jitter=0)


def _exits(after_s: float, code: int) -> list[str]:
    return child_argv("--exit-after", str(after_s), "--code", str(code))


async def test_permanent_child_is_restarted_after_a_clean_exit(
    supervisor: Supervisor, events: EventLog
) -> None:
    await supervisor.start(ChildSpec(name="p", argv=_exits(0.1, 0), restart=FAST))
    spawns = await events.wait_for(ChildEventKind.SPAWN, "p", count=3)
    assert len({e.pid for e in spawns}) == 3
    restarts = events.of(ChildEventKind.RESTART, "p")
    assert [e.restarts for e in restarts[:2]] == [1, 2]
    assert "exited with code 0" in restarts[0].reason
    assert events.kinds("p")[:6] == ["spawn", "ready", "exit", "restart", "spawn", "ready"]


async def test_transient_child_is_not_restarted_after_a_clean_exit(
    supervisor: Supervisor, events: EventLog
) -> None:
    policy = RestartPolicy(type=RestartType.TRANSIENT, backoff_initial_s=0.05, jitter=0)
    await supervisor.start(ChildSpec(name="t", argv=_exits(0.1, 0), restart=policy))
    (exit_event,) = await events.wait_for(ChildEventKind.EXIT, "t")
    assert exit_event.exit_code == 0
    info = supervisor.info("t")
    assert info.state is ChildState.EXITED and info.pid is None and info.restarts == 0
    assert info.last_error is None
    assert events.kinds("t") == ["spawn", "ready", "exit"]


async def test_transient_child_is_restarted_after_an_abnormal_exit(
    supervisor: Supervisor, events: EventLog
) -> None:
    policy = RestartPolicy(type=RestartType.TRANSIENT, backoff_initial_s=0.05, jitter=0)
    await supervisor.start(ChildSpec(name="t", argv=_exits(0.1, 3), restart=policy))
    await events.wait_for(ChildEventKind.SPAWN, "t", count=2)
    first_exit = events.of(ChildEventKind.EXIT, "t")[0]
    assert first_exit.exit_code == 3 and first_exit.signal is None
    assert supervisor.info("t").last_error == "exited with code 3"


async def test_transient_child_killed_by_a_signal_is_restarted(
    supervisor: Supervisor, events: EventLog
) -> None:
    policy = RestartPolicy(type=RestartType.TRANSIENT, backoff_initial_s=0.05, jitter=0)
    info = await supervisor.start(ChildSpec(name="t", argv=child_argv(), restart=policy))
    assert info.pid is not None
    os.kill(info.pid, signal.SIGTERM)  # not the supervisor's own stop: abnormal
    (exit_event,) = await events.wait_for(ChildEventKind.EXIT, "t")
    assert exit_event.signal == signal.SIGTERM and exit_event.exit_code is None
    assert "killed by SIGTERM" in exit_event.reason
    await events.wait_for(ChildEventKind.READY, "t", count=2)
    assert supervisor.info("t").last_signal == signal.SIGTERM
    assert supervisor.info("t").state is ChildState.RUNNING


async def test_temporary_child_is_never_restarted(supervisor: Supervisor, events: EventLog) -> None:
    policy = RestartPolicy(type=RestartType.TEMPORARY, backoff_initial_s=0.05)
    await supervisor.start(ChildSpec(name="once", argv=_exits(0.1, 1), restart=policy))
    await events.wait_for(ChildEventKind.EXIT, "once")
    info = supervisor.info("once")
    assert info.state is ChildState.EXITED and info.last_exit_code == 1
    # Nothing more happens, however long we look: no restart is even scheduled.
    with anyio.move_on_after(0.5):
        await events.wait_for(ChildEventKind.SPAWN, "once", count=2)
    assert events.kinds("once") == ["spawn", "ready", "exit"]


async def test_crash_loop_backs_off_then_fails_while_sibling_keeps_running(
    supervisor: Supervisor, events: EventLog
) -> None:
    sibling = await supervisor.start(ChildSpec(name="sibling", argv=child_argv()))
    policy = RestartPolicy(
        max_restarts=3, window_s=30, backoff_initial_s=0.2, backoff_max_s=10, jitter=0
    )
    await supervisor.start(ChildSpec(name="loop", argv=_exits(0, 1), restart=policy))
    (failed,) = await events.wait_for(ChildEventKind.FAILED, "loop", limit_s=15)
    assert "max_restarts=3" in failed.reason and "exited with code 1" in failed.reason
    info = supervisor.info("loop")
    assert info.state is ChildState.FAILED and info.restarts == 3 and info.pid is None
    assert info.last_error == failed.reason
    # 1 start + 3 restarts, then the 4th crash exceeds the intensity.
    assert len(events.of(ChildEventKind.SPAWN, "loop")) == 4
    exits = events.of(ChildEventKind.EXIT, "loop")
    spawns = events.of(ChildEventKind.SPAWN, "loop")
    gaps = [spawn.at - exit.at for exit, spawn in zip(exits, spawns[1:], strict=False)]
    assert len(gaps) == 3
    # The backoff doubles, 0.2, 0.4, 0.8 s, and each restart really waited that long. (The upper
    # bound is loose: on a loaded machine spawning alone can take a while.)
    restarts = events.of(ChildEventKind.RESTART, "loop")
    for gap, backoff, restart in zip(gaps, [0.2, 0.4, 0.8], restarts, strict=True):
        assert f"after {backoff:.2f}s backoff" in restart.reason
        assert backoff <= gap < backoff + 2.0, gaps
    # The sibling was never touched.
    now = supervisor.info("sibling")
    assert now.state is ChildState.RUNNING and now.pid == sibling.pid and now.restarts == 0
    assert events.kinds("sibling") == ["spawn", "ready"]


async def test_staying_up_for_the_window_resets_intensity_and_backoff(
    supervisor: Supervisor, events: EventLog
) -> None:
    # With max_restarts=1, two crashes within the window would fail the child. Each run lasts
    # longer than the window, so it never fails and the backoff never grows.
    policy = RestartPolicy(
        max_restarts=1, window_s=0.25, backoff_initial_s=0.05, backoff_max_s=10, jitter=0
    )
    await supervisor.start(ChildSpec(name="slow-crash", argv=_exits(0.3, 1), restart=policy))
    await events.wait_for(ChildEventKind.RESTART, "slow-crash", count=3)
    assert events.of(ChildEventKind.FAILED) == []
    for event in events.of(ChildEventKind.RESTART, "slow-crash"):
        assert "after 0.05s backoff" in event.reason


async def test_backoff_state_is_visible(supervisor: Supervisor, events: EventLog) -> None:
    policy = RestartPolicy(backoff_initial_s=5, jitter=0)
    await supervisor.start(ChildSpec(name="b", argv=_exits(0, 2), restart=policy))
    await events.wait_for(ChildEventKind.EXIT, "b")
    # The restart decision follows the exit event without a pause.
    assert supervisor.info("b").state is ChildState.BACKOFF
    # A stop during the backoff ends it at once, without a restart.
    with anyio.fail_after(2):
        await supervisor.stop("b")
    assert events.kinds("b") == ["spawn", "ready", "exit", "stop"]


async def test_ready_probe_runs_again_after_a_restart(
    supervisor: Supervisor, events: EventLog, tmp_path: Path
) -> None:
    probed: list[ChildInfo] = []
    ready_file = tmp_path / "ready"
    wait_for_file = file_exists(ready_file)

    async def ready(info: ChildInfo) -> None:
        probed.append(info)
        await wait_for_file(info)
        ready_file.unlink()

    info = await supervisor.start(
        ChildSpec(
            name="r",
            argv=child_argv("--ready-file", str(ready_file)),
            ready=ready,
            restart=FAST,
        )
    )
    assert info.pid is not None
    os.kill(info.pid, signal.SIGKILL)
    ready_events = await events.wait_for(ChildEventKind.READY, "r", count=2)
    assert [p.state for p in probed] == [ChildState.STARTING, ChildState.STARTING]
    assert probed[1].pid == ready_events[1].pid != info.pid
    assert events.kinds("r") == ["spawn", "ready", "exit", "restart", "spawn", "ready"]
    assert supervisor.info("r").state is ChildState.RUNNING


async def test_failed_ready_probe_after_a_restart_counts_as_a_crash(
    supervisor: Supervisor, events: EventLog
) -> None:
    calls = 0

    async def ready_only_once(info: ChildInfo) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("warm-up failed")

    policy = RestartPolicy(max_restarts=2, backoff_initial_s=0.05, jitter=0)
    info = await supervisor.start(
        ChildSpec(name="w", argv=child_argv(), ready=ready_only_once, restart=policy)
    )
    assert info.pid is not None
    os.kill(info.pid, signal.SIGKILL)
    (failed,) = await events.wait_for(ChildEventKind.FAILED, "w")
    assert "warm-up failed" in failed.reason
    assert calls == 3


async def test_operator_restart_replaces_the_process_and_keeps_its_place(
    supervisor: Supervisor, events: EventLog
) -> None:
    first = await supervisor.start(ChildSpec(name="first", argv=child_argv()))
    await supervisor.start(ChildSpec(name="second", argv=child_argv()))
    again = await supervisor.restart("first")
    assert again.state is ChildState.RUNNING and again.pid != first.pid
    assert first.pid is not None and not pid_alive(first.pid)
    assert [c.name for c in supervisor.children()] == ["first", "second"]
    assert events.kinds("first") == ["spawn", "ready", "stop", "restart", "spawn", "ready"]
    assert events.of(ChildEventKind.RESTART, "first")[0].reason == "operator restart"


async def test_operator_restart_revives_a_failed_child(
    supervisor: Supervisor, events: EventLog
) -> None:
    policy = RestartPolicy(max_restarts=0, backoff_initial_s=0.05)
    await supervisor.start(ChildSpec(name="f", argv=_exits(0.1, 1), restart=policy))
    await events.wait_for(ChildEventKind.FAILED, "f")
    assert supervisor.info("f").state is ChildState.FAILED
    info = await supervisor.restart("f")
    assert info.state is ChildState.RUNNING and info.restarts == 0
