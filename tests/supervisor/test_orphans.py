"""The registry of live children and the reaping of what a SIGKILLed daemon left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from agentd.supervisor import ChildSpec, Supervisor
from agentd.supervisor._process import proc_stat
from tests.supervisor.helpers import CHILDREN, EventLog, child_argv, pid_alive, wait_gone

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[2]


def _registry(path: Path) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = json.loads(path.read_text())["children"]
    return entries


async def test_registry_lists_live_children(
    tmp_path: Path, events: EventLog, extra_pids: list[int]
) -> None:
    registry = tmp_path / "state" / "children.json"
    async with Supervisor(on_event=events, registry_path=registry) as supervisor:
        assert _registry(registry) == []
        info = await supervisor.start(ChildSpec(name="a", argv=child_argv()))
        assert info.pid is not None
        stat = proc_stat(info.pid)
        assert stat is not None and stat.pgrp == info.pid and stat.session == info.pid
        assert _registry(registry) == [
            {"name": "a", "pid": info.pid, "pgid": info.pid, "start_ticks": stat.start_ticks}
        ]
        await supervisor.start(ChildSpec(name="b", argv=child_argv()))
        assert [e["name"] for e in _registry(registry)] == ["a", "b"]
        await supervisor.stop("a")
        assert [e["name"] for e in _registry(registry)] == ["b"]
    assert _registry(registry) == []


async def test_orphans_of_a_sigkilled_daemon_are_reaped(
    tmp_path: Path, extra_pids: list[int], anyio_backend: tuple[str, dict[str, object]]
) -> None:
    registry = tmp_path / "children.json"
    pidfile = tmp_path / "grandchild"
    loop = ["uvloop"] if anyio_backend[1].get("use_uvloop") else []  # the daemon's loop too
    daemon = await anyio.open_process(
        [sys.executable, str(CHILDREN / "daemon.py"), str(registry), str(pidfile), *loop],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.DEVNULL,
    )
    async with daemon:
        extra_pids.append(daemon.pid)
        assert daemon.stdout is not None
        line = ""
        with anyio.fail_after(15):
            async for text in TextReceiveStream(daemon.stdout):
                line += text
                if "\n" in line:
                    break
        assert line.startswith("started "), line
        child = int(line.split()[1])
        grandchild = int(pidfile.read_text())
        extra_pids.extend([child, grandchild])
        assert pid_alive(child) and pid_alive(grandchild)
        assert [e["pid"] for e in _registry(registry)] == [child]

        daemon.kill()  # SIGKILL: no cleanup of any kind runs in the daemon
        await daemon.wait()

    # PDEATHSIG took the direct child down with the daemon ...
    assert await wait_gone(child), "the child outlived its SIGKILLed parent"
    # ... but not the grandchild, which only the registry can find now.
    assert pid_alive(grandchild)
    stat = proc_stat(grandchild)
    assert stat is not None and stat.pgrp == child

    async with Supervisor(registry_path=registry):
        # Orphans are reaped before run() reports started.
        assert not pid_alive(grandchild)
        assert _registry(registry) == []


async def test_reaping_spares_a_process_that_reused_the_pid(
    tmp_path: Path, extra_pids: list[int]
) -> None:
    registry = tmp_path / "children.json"
    bystander = await anyio.open_process(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    victim = await anyio.open_process(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    async with bystander, victim:
        extra_pids.extend([bystander.pid, victim.pid])
        bystander_stat, victim_stat = proc_stat(bystander.pid), proc_stat(victim.pid)
        assert bystander_stat is not None and victim_stat is not None
        entries = [
            # Same pid, other start time: a new process that got the pid of a dead child.
            {"name": "old", "pid": bystander.pid, "pgid": bystander.pid,
             "start_ticks": bystander_stat.start_ticks - 1},
            {"name": "live", "pid": victim.pid, "pgid": victim.pid,
             "start_ticks": victim_stat.start_ticks},
        ]  # fmt: skip
        registry.write_text(json.dumps({"children": entries}))
        async with Supervisor(registry_path=registry):
            assert pid_alive(bystander.pid)
            with anyio.fail_after(5):
                assert await victim.wait() == -signal.SIGKILL
        bystander.kill()
        await bystander.wait()


async def test_unreadable_registry_is_ignored(tmp_path: Path) -> None:
    registry = tmp_path / "children.json"
    registry.write_text("{not json")
    async with Supervisor(registry_path=registry):
        assert _registry(registry) == []
