"""Model pools in the running daemon: started after the bus without holding READY back, shown
by `agentctl models` (table and --json) while loading and once ready, scaled by an operator,
recorded in the decision log, and stopped with the daemon (no server process survives).

The pool's servers are fake_vllm.py (quick); tests/inference/test_pools_vllm.py runs the same
pool manager against the real vLLM CPU build.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DaemonProcess, decision_records, descendants, pid_alive, running_daemon
from tests.harness import write_config as write_daemon_config
from tests.inference.pool_helpers import FAKE_VLLM

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def models(daemon: DaemonProcess) -> list[dict[str, Any]]:
    result = daemon.agentctl("--json", "models")
    assert result.returncode == 0, result.stderr
    pools: list[dict[str, Any]] = json.loads(result.stdout)
    return pools


def wait_for_state(daemon: DaemonProcess, states: list[str], timeout_s: float = 40.0) -> Any:
    """Poll `agentctl models` (the daemon announces nothing else for pools) until the fake
    pool's replicas are in `states`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        members = models(daemon)[0]["members"]
        if [m["state"] for m in members] == states:
            return members
        time.sleep(0.2)
    raise AssertionError(f"replicas not {states}: {models(daemon)}")


def test_pools_run_in_the_daemon_and_stop_with_it(tmp_path: Path) -> None:
    command = json.dumps([sys.executable, str(FAKE_VLLM)])
    pool = f"""
[models.fake]
model = "fake-org/fake-model"
launcher = {{ command = {command}, env = {{ FAKE_VLLM_STARTUP_S = "10" }} }}
device = "cpu"
replicas = {{ min = 1, max = 2 }}
liveness = {{ interval_s = 0.5, timeout_s = 2.0 }}
autoscale = {{ enabled = false }}
stop_grace_s = 3.0
"""
    config = write_daemon_config(tmp_path, extra=pool)
    state_dir = tmp_path / "state"
    with running_daemon(config) as daemon:
        # READY came while the replica still loads (10 s here, 40 s for vLLM on a CPU)
        [loading] = wait_for_state(daemon, ["loading"])
        assert loading["loading"]["timeout_s"] == 300.0
        table = daemon.agentctl("models")
        assert table.returncode == 0, table.stderr
        assert "fake-0" in table.stdout and "loading" in table.stdout
        [ready] = wait_for_state(daemon, ["ready"])
        assert ready["placement"]["device"] == "cpu"
        text = daemon.agentctl("models").stdout
        header, row = text.splitlines()[:2]
        assert header.split()[:4] == ["POOL", "REPLICA", "STATE", "PLACEMENT"]
        assert row.split()[:4] == ["fake", "(1/1..2)", "fake-0", "ready"]
        assert "fake: serves fake-org/fake-model as 'fake'" in text

        scaled = daemon.agentctl("models", "scale", "fake", "2")
        assert scaled.returncode == 0, scaled.stderr
        assert scaled.stdout.strip() == "fake: 1 -> 2"
        members = wait_for_state(daemon, ["ready", "ready"])
        assert members[0]["placement"]["cores"] != members[1]["placement"]["cores"]
        refused = daemon.agentctl("models", "scale", "fake", "3")
        assert refused.returncode == 1 and "out_of_bounds" in refused.stderr

        status = json.loads(daemon.agentctl("--json", "status").stdout)
        assert status["services"]["models"] == "1 pools"
        servers = [m["pid"] for m in members]
        processes = {*servers, *(p for pid in servers for p in descendants(pid))}
        assert daemon.stop(signal.SIGTERM) == 0
    assert [pid for pid in processes if pid_alive(pid)] == []
    started = decision_records(state_dir, "model.started")
    assert sorted(r["replica"] for r in started) == ["fake-0", "fake-1"]
    assert {r["decision"] for r in decision_records(state_dir, "model.scaled")} == {
        "0->1",
        "1->2",
    }
    stopped = decision_records(state_dir, "model.stopped")
    assert sorted(r["replica"] for r in stopped) == ["fake-0", "fake-1"]
    commands = decision_records(state_dir, "control.command")
    assert any(r["decision"] == "models.scale" for r in commands)


def test_a_pool_that_does_not_fit_stops_the_daemon_before_it_starts(tmp_path: Path) -> None:
    pool = '[models.big]\nmodel = "org/big"\nlauncher = { command = ["vllm", "serve"] }\n'
    cores = len(os.sched_getaffinity(0))
    config = write_daemon_config(
        tmp_path, extra=pool + f"device = 'cpu'\ncpu_cores_per_replica = {cores + 1}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentd", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"agentd: pool 'big' needs 1 replica x {cores + 1} CPU cores (1 GiB KV cache each); "
        f"free: {cores} CPU core"
    )
    assert not (tmp_path / "state" / "nats").exists()  # nothing was started


def test_a_killed_daemon_leaves_no_server_behind_once_restarted(tmp_path: Path) -> None:
    """SIGKILL: the server dies with the daemon (PDEATHSIG), its engine-core child is orphaned;
    the next daemon on the same state directory kills it before it starts anything."""
    command = json.dumps([sys.executable, str(FAKE_VLLM)])
    pool = f"""
[models.fake]
model = "fake-org/fake-model"
launcher = {{ command = {command}, env = {{ FAKE_VLLM_ENGINE = "1" }} }}
device = "cpu"
autoscale = {{ enabled = false }}
"""
    config = write_daemon_config(tmp_path, extra=pool)
    log = tmp_path / "state" / "logs" / "models" / "fake-0.log"
    with running_daemon(config) as daemon:
        [ready] = wait_for_state(daemon, ["ready"])
        engine = int(log.read_text().split("INFO engine core pid ", 1)[1].split()[0])
        assert pid_alive(engine)
        daemon.proc.kill()  # SIGKILL the daemon alone, not its process group
        daemon.proc.wait(10)
    deadline = time.monotonic() + 10
    while pid_alive(ready["pid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(ready["pid"])  # PDEATHSIG
    assert pid_alive(engine)  # orphaned, as vLLM's engine core would be
    with running_daemon(config) as daemon:
        assert not pid_alive(engine)  # reaped before READY
        [again] = wait_for_state(daemon, ["ready"])
        assert again["pid"] != ready["pid"]
        assert daemon.stop(signal.SIGTERM) == 0
