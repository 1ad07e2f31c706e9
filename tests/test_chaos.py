"""Nothing is lost: replicas SIGKILLed under load, and the daemon itself SIGKILLed."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.harness import (
    TEST_AGENTS,
    DaemonProcess,
    descendants,
    ledger_entries,
    pid_alive,
    running_daemon,
    send_and_collect,
    write_config,
)

pytestmark = pytest.mark.integration


def _agents_dir(directory: Path, *names: str) -> Path:
    agents = directory / "agents"
    agents.mkdir()
    for name in names:
        (agents / name).symlink_to(TEST_AGENTS / name)
    return agents


def _replica_pids(daemon: DaemonProcess, agent: str) -> list[int]:
    out = daemon.agentctl("--json", "ps")
    rows = {a["agent"]: a for a in json.loads(out.stdout)} if out.returncode == 0 else {}
    return [r["pid"] for r in rows.get(agent, {}).get("replicas", []) if r["pid"]]


@pytest.mark.timeout(300)
def test_a_thousand_messages_while_replicas_are_killed_every_two_seconds(tmp_path: Path) -> None:
    # 3 replicas x 4 runs of 200 ms: the inbox stays backlogged for the whole test, so every
    # kill cuts runs short; a short ack_wait brings their messages back within seconds
    # in a folder of its own: the sandbox lets the replicas write there, never beside the state
    (tmp_path / "chaos").mkdir()
    chaos_log = tmp_path / "chaos" / "starts.log"
    config = write_config(
        tmp_path,
        agents_dir=_agents_dir(tmp_path, "chaos"),
        extra="[inbox]\nack_wait_s = 5.0\n[autoscale]\nenabled = false\n",
    )
    with running_daemon(config, env={"CHAOS_LOG": str(chaos_log)}) as daemon:
        kills: list[int] = []

        async def scenario() -> dict[str, dict[str, Any]]:
            async with anyio.create_task_group() as tg:
                box: dict[str, Any] = {}

                async def load() -> None:
                    payloads = [{"n": i} for i in range(1000)]
                    box["results"] = await send_and_collect(
                        daemon.url, "chaos", payloads, timeout_s=240
                    )
                    tg.cancel_scope.cancel()

                async def chaos() -> None:
                    rng = random.Random(7)
                    while True:
                        await anyio.sleep(2)
                        pids = await anyio.to_thread.run_sync(_replica_pids, daemon, "chaos")
                        if pids:
                            victim = rng.choice(pids)
                            os.kill(victim, signal.SIGKILL)
                            kills.append(victim)

                tg.start_soon(load)
                tg.start_soon(chaos)
            results: dict[str, dict[str, Any]] = box["results"]
            return results

        results = anyio.run(scenario)
        ledger = anyio.run(ledger_entries, daemon.url, list(results))
        assert daemon.stop() == 0

    assert len(kills) >= 2, "the chaos loop must have killed replicas"
    assert len(results) == 1000 and all(r["ok"] for r in results.values())
    # exactly one completed run per message: one ledger record each, naming one run
    assert set(results) <= set(ledger)
    assert all(results[m]["run_id"] == ledger[m]["run_id"] for m in results)
    starts = Counter(chaos_log.read_text().split())
    assert set(starts) == {str(i) for i in range(1000)}
    redelivered = [n for n, count in starts.items() if count > 1]
    assert redelivered, "some runs must have been cut short by a kill and run again"


def test_the_daemon_sigkilled_leaves_no_child_and_the_next_one_processes_the_backlog(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path, agents_dir=_agents_dir(tmp_path, "slow"), extra="[autoscale]\nenabled = false\n"
    )
    first = DaemonProcess(config)
    try:
        first.wait_ready()
        children = descendants(first.pid)
        assert len(children) >= 2
        assert first.agentctl("stop", "slow").returncode == 0  # messages now wait in the inbox
        sent = [
            json.loads(first.agentctl("--json", "send", "slow", json.dumps({"i": i})).stdout)
            for i in range(20)
        ]
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(10)
    finally:
        first.close()
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)  # PDEATHSIG is immediate; grandchildren wait for the next daemon
    with running_daemon(config) as second:
        assert [p for p in children if pid_alive(p)] == []
        wanted = {m["message_id"] for m in sent}

        def processed() -> bool:
            return wanted <= set(anyio.run(ledger_entries, second.url, wanted))

        deadline = time.monotonic() + 30
        while not processed():
            assert time.monotonic() < deadline, "the backlog was not processed"
            time.sleep(0.2)
        assert second.stop() == 0
