"""`agentd run` as a real process: start, status, signals, systemd notify, the embedded NATS."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.harness import DaemonProcess, descendants, pid_alive, running_daemon, write_config

pytestmark = pytest.mark.integration


def _status(daemon: DaemonProcess) -> dict[str, object]:
    out = daemon.agentctl("--json", "status")
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_start_status_sigterm_leaves_nothing_behind(tmp_path: Path) -> None:
    with running_daemon(write_config(tmp_path)) as daemon:
        status = _status(daemon)
        assert status["pid"] == daemon.pid
        assert status["embedded_nats"] is True
        services = status["services"]
        assert isinstance(services, dict)
        assert services["bus"] == "connected" and services["agents"] == "running"
        children = descendants(daemon.pid)
        assert len(children) >= 2  # nats-server and the echo replica at least
        assert daemon.stop(signal.SIGTERM) == 0
        still = [pid for pid in children if pid_alive(pid)]
        assert still == [], f"left behind: {still}\n{daemon.log()}"
        assert "stopped" in daemon.log()


def test_notify_ready_watchdog_stopping_in_order(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    daemon = DaemonProcess(config, env={"WATCHDOG_USEC": "400000"})  # ping every 0.2 s
    try:
        daemon.wait_ready()
        daemon.notify.wait_for("WATCHDOG=1", 5)
        assert daemon.stop() == 0
        messages = daemon.notify.wait_for("STOPPING=1", 5)
    finally:
        daemon.close()
    fields = [f for m in messages for f in m.split("\n") if not f.startswith("STATUS=")]
    ready, watchdog, stopping = (
        fields.index("READY=1"),
        fields.index("WATCHDOG=1"),
        fields.index("STOPPING=1"),
    )
    assert ready < watchdog < stopping
    assert any(m.startswith("STATUS=") for m in messages[0].split("\n"))


def test_a_second_daemon_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with running_daemon(config) as first:
        second = DaemonProcess(config)
        try:
            code = second.proc.wait(30)
        finally:
            second.close()
        assert code == 1
        assert f"another agentd (pid {first.pid}) is already running" in second.log()
        assert _status(first)["pid"] == first.pid  # the first one is unaffected


def _nats_servers(daemon: DaemonProcess) -> list[int]:
    return [
        pid
        for pid in descendants(daemon.pid)
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"nats-server")
    ]


def test_embedded_nats_killed_is_restarted_and_the_daemon_serves_again(tmp_path: Path) -> None:
    with running_daemon(write_config(tmp_path)) as daemon:
        echo_pid = json.loads(daemon.agentctl("--json", "ps").stdout)[0]["replicas"][0]["pid"]
        nats_pids = _nats_servers(daemon)
        assert len(nats_pids) == 1
        os.kill(nats_pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            sent = daemon.agentctl("send", "echo", '{"text": "after"}', "--wait", timeout_s=30)
            if sent.returncode == 0:
                break
            assert time.monotonic() < deadline, f"{sent.stderr}\n{daemon.log()}"
            time.sleep(0.2)
        assert json.loads(sent.stdout) == {"text": "after"}
        assert not pid_alive(nats_pids[0])
        (restarted,) = _nats_servers(daemon)
        assert restarted != nats_pids[0]
        # the outage silenced heartbeats, but the echo replica was not taken for hung
        ps = json.loads(daemon.agentctl("--json", "ps").stdout)
        assert ps[0]["replicas"][0]["pid"] == echo_pid
        assert _status(daemon)["services"] == {
            "supervisor": "running",
            "nats": "running",
            "bus": "connected",
            "anchor": "decision log anchored",
            "router": "running",
            "control": "running",
            "agents": "running",
            "autoscaler": "running",
            "tools": "running",
            "gateway": "running",
        }
        assert daemon.stop() == 0
