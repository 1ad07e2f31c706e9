"""Liveness probes: a hung (SIGSTOPped) child is killed and restarted."""

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
    LivenessProbe,
    RestartPolicy,
    Supervisor,
)
from tests.supervisor.helpers import EventLog, child_argv, file_exists, pid_alive

pytestmark = pytest.mark.anyio


def fresh_heartbeat(path: Path) -> LivenessProbe:
    """Passes once the child touches `path` again after the probe began; hangs otherwise."""

    async def probe(info: ChildInfo) -> bool:
        heartbeat = anyio.Path(path)
        before = (await heartbeat.stat()).st_mtime_ns
        # The child beats every 50 ms; polling the file is what such a probe does.
        while (await heartbeat.stat()).st_mtime_ns == before:  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return True

    return probe


async def test_sigstopped_child_is_killed_and_restarted(
    supervisor: Supervisor, events: EventLog, tmp_path: Path
) -> None:
    heartbeat = tmp_path / "heartbeat"
    interval, timeout = 0.2, 0.3
    spec = ChildSpec(
        name="hb",
        argv=child_argv("--heartbeat", str(heartbeat)),
        ready=file_exists(heartbeat),
        liveness=fresh_heartbeat(heartbeat),
        liveness_interval_s=interval,
        liveness_timeout_s=timeout,
        liveness_failures=2,
        restart=RestartPolicy(backoff_initial_s=0.05, jitter=0),
    )
    info = await supervisor.start(spec)
    assert info.pid is not None
    # Healthy for a few periods: no false alarm.
    with anyio.move_on_after(4 * interval):
        await events.wait_for(ChildEventKind.UNHEALTHY, "hb")
    assert events.of(ChildEventKind.UNHEALTHY) == []

    stopped_at = anyio.current_time()
    os.kill(info.pid, signal.SIGSTOP)
    await events.wait_for(ChildEventKind.UNHEALTHY, "hb", limit_s=5)
    detected_s = anyio.current_time() - stopped_at
    # Two failed probes, each at most one interval plus one timeout apart.
    assert detected_s < 3 * (interval + timeout), detected_s
    (exit_event,) = await events.wait_for(ChildEventKind.EXIT, "hb")
    assert exit_event.pid == info.pid and exit_event.signal == signal.SIGKILL
    assert "unhealthy" in exit_event.reason and "timed out after 0.3s" in exit_event.reason
    assert not pid_alive(info.pid)
    ready_again = await events.wait_for(ChildEventKind.READY, "hb", count=2)
    now = supervisor.info("hb")
    assert now.state is ChildState.RUNNING and now.restarts == 1
    assert now.pid == ready_again[1].pid != info.pid
    assert now.last_signal == signal.SIGKILL


async def test_unhealthy_kills_count_toward_restart_intensity(
    supervisor: Supervisor, events: EventLog
) -> None:
    async def never_alive(info: ChildInfo) -> bool:
        return False

    spec = ChildSpec(
        name="sick",
        argv=child_argv(),
        liveness=never_alive,
        liveness_interval_s=0.05,
        liveness_failures=1,
        restart=RestartPolicy(max_restarts=1, backoff_initial_s=0.05, jitter=0),
    )
    await supervisor.start(spec)
    await events.wait_for(ChildEventKind.FAILED, "sick")
    assert events.kinds("sick") == [
        "spawn", "ready", "unhealthy", "exit", "restart",
        "spawn", "ready", "unhealthy", "exit", "failed",
    ]  # fmt: skip
    assert "probe returned False" in events.of(ChildEventKind.UNHEALTHY)[0].reason
    assert supervisor.info("sick").state is ChildState.FAILED


async def test_raising_probe_counts_as_a_failure_and_success_resets_the_count(
    supervisor: Supervisor, events: EventLog
) -> None:
    outcomes = iter([False, False, True, False, False, False])
    calls = 0

    async def flaky(info: ChildInfo) -> bool:
        nonlocal calls
        calls += 1
        if not next(outcomes, False):
            raise OSError("connection reset")
        return True

    spec = ChildSpec(
        name="flaky",
        argv=child_argv(),
        liveness=flaky,
        liveness_interval_s=0.05,
        liveness_failures=3,
        restart=RestartPolicy(max_restarts=0),
    )
    await supervisor.start(spec)
    (unhealthy,) = await events.wait_for(ChildEventKind.UNHEALTHY, "flaky")
    # Two failures, a success (count back to zero), then three failures in a row.
    assert calls == 6
    assert "3 liveness failures" in unhealthy.reason and "OSError: connection reset" in (
        unhealthy.reason
    )
    await events.wait_for(ChildEventKind.FAILED, "flaky")
