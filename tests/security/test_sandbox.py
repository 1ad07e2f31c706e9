"""Agent replicas run in a kernel sandbox (docs/sandbox.md): a hostile graph, and a child it
starts, can read no secret of the state directory, write no decision, reach no TCP port it was
not given, bind none and signal nothing outside itself; with [sandbox].mode = "off" (the
control) the same attempts succeed, so these tests can fail. An agent given a port reaches
exactly that one. A kernel without Landlock (simulated) is reported, or refused."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, TEST_AGENTS, DaemonProcess, running_daemon, write_config

pytestmark = pytest.mark.integration

FORBIDDEN = [
    "read operator creds",
    "read daemon creds",
    "read other agent creds",
    "read signing key",
    "write decision log",
    "connect forbidden port",
    "bind a port",
    "signal the daemon",
    # no capabilities even when the daemon runs as root, and no reading of another process's
    # environment or memory (agentd's processes are not dumpable)
    "read daemon environment",
    "open a raw socket",
]
NEED_ROOT = {"read daemon environment", "open a raw socket"}


class Listener:
    """A TCP server on a free loopback port that accepts and closes every connection."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, Listener]]:
    listeners = {"forbidden": Listener(), "allowed": Listener()}
    yield listeners
    for listener in listeners.values():
        listener.close()


def _agents(directory: Path, allowed_port: int) -> Path:
    agents = directory / "agents"
    agents.mkdir()
    (agents / "hostile").symlink_to(TEST_AGENTS / "hostile")
    (agents / "echo").symlink_to(REPO / "agents" / "echo")
    porter = agents / "porter"  # the hostile graph, given one extra port
    porter.mkdir()
    shutil.copy(TEST_AGENTS / "hostile" / "hostile_graph.py", porter)
    (porter / "agent.toml").write_text(
        'name = "porter"\ngraph = "hostile_graph:build"\ncheckpoint = false\n'
        f"autoscale = false\n\n[sandbox]\nconnect_ports = [{allowed_port}]\n"
    )
    return agents


def _config(directory: Path, allowed_port: int, sandbox: str = "") -> Path:
    return write_config(
        directory,
        agents_dir=_agents(directory, allowed_port),
        # Landlock alone: the uid per agent has its own tests (test_sandbox_users.py)
        extra=f'[autoscale]\nenabled = false\n\n[sandbox]\nusers = "off"\n{sandbox}',
    )


def _ps(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    out = daemon.agentctl("--json", "ps")
    assert out.returncode == 0, out.stderr
    return {a["agent"]: a for a in json.loads(out.stdout)}


def _attack(daemon: DaemonProcess, agent: str, ports: dict[str, Listener]) -> dict[str, Any]:
    echo_pid = _ps(daemon)["echo"]["replicas"][0]["pid"]
    message = {
        "other_agent": "echo",
        "other_pid": echo_pid,
        "daemon_pid": daemon.pid,
        "forbidden_port": ports["forbidden"].port,
        "allowed_port": ports["allowed"].port,
    }
    out = daemon.agentctl("send", agent, json.dumps(message), "--wait", timeout_s=120)
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


@pytest.fixture(scope="module")
def sandboxed(
    tmp_path_factory: pytest.TempPathFactory, ports: dict[str, Listener]
) -> Iterator[DaemonProcess]:
    config = _config(tmp_path_factory.mktemp("sandboxed"), ports["allowed"].port)
    with running_daemon(config) as daemon:
        yield daemon
        assert daemon.stop() == 0


def test_every_attempt_of_a_hostile_replica_and_its_child_is_denied(
    sandboxed: DaemonProcess, ports: dict[str, Listener]
) -> None:
    report = _attack(sandboxed, "hostile", ports)
    for where in ("in_process", "subprocess"):
        outcomes = report[where]
        for attempt in FORBIDDEN:
            assert outcomes[attempt].startswith("denied"), (where, attempt, outcomes[attempt])
        # the kernel's answer, not a missing file or a refused connection
        for attempt in FORBIDDEN:
            assert "PermissionError" in outcomes[attempt], (where, attempt, outcomes[attempt])
        # secrets by handle: another replica's environment holds no credentials
        assert outcomes["read other agent environment"].startswith("denied"), outcomes
        # hostile was given no extra port
        assert outcomes["connect allowed port"].startswith("denied"), outcomes
    # its log shows what it tried and what the kernel said
    log = (sandboxed.dir / "state" / "logs" / "hostile-0.log").read_text()
    assert "attempt 'read daemon creds': denied: PermissionError: [Errno 13]" in log
    assert "agentd.sandbox: landlock-abi=" in log
    # the daemon keeps serving
    out = sandboxed.agentctl("send", "echo", '{"still": "here"}', "--wait")
    assert out.returncode == 0 and json.loads(out.stdout) == {"still": "here"}


def test_an_agent_given_a_port_reaches_exactly_that_port(
    sandboxed: DaemonProcess, ports: dict[str, Listener]
) -> None:
    before = ports["allowed"].accepted
    report = _attack(sandboxed, "porter", ports)
    for where in ("in_process", "subprocess"):
        assert report[where]["connect allowed port"] == "allowed", report[where]
        assert report[where]["connect forbidden port"].startswith("denied: PermissionError")
    assert ports["allowed"].accepted == before + 2


def test_ps_and_the_spawn_records_name_each_replicas_sandbox(sandboxed: DaemonProcess) -> None:
    rows = _ps(sandboxed)
    hostile, porter = rows["hostile"]["sandbox"], rows["porter"]["sandbox"]
    assert hostile["mode"] == "enforce" and hostile["landlock_abi"] >= 6
    assert hostile["missing"] == [] and len(hostile["digest"]) == 16
    assert hostile["digest"] != porter["digest"]  # porter has one more port
    from tests.harness import decision_records

    spawned = [
        r
        for r in decision_records(sandboxed.dir / "state", "agent.spawned")
        if r.get("agent") == "hostile"
    ]
    assert spawned and spawned[-1]["inputs"]["sandbox"]["digest"] == hostile["digest"]


def test_control_with_the_sandbox_off_the_same_attempts_succeed(
    tmp_path: Path, ports: dict[str, Listener]
) -> None:
    config = _config(tmp_path, ports["allowed"].port, 'mode = "off"\n')
    with running_daemon(config) as daemon:
        report = _attack(daemon, "hostile", ports)
        assert daemon.stop() == 0
    for where in ("in_process", "subprocess"):
        for attempt in [*FORBIDDEN, "connect allowed port"]:
            if attempt in NEED_ROOT and os.geteuid() != 0:
                continue  # a daemon run by another user never had these to lose
            assert report[where][attempt] == "allowed", (where, attempt, report[where])
        # /proc/<pid>/environ of another replica is readable, and holds no secret: they come
        # on stdin whatever the sandbox mode
        outcome = report[where]["read other agent environment"]
        assert outcome == "denied: LookupError: no credentials in its environment", outcome


def _run(config: Path, env: dict[str, str], timeout_s: float = 60) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentd.cli.agentd", "--config", str(config), "run"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_without_landlock_require_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra="\n[sandbox]\nrequire = true\n")
    proc = _run(config, {"AGENTD_SANDBOX_MAX_ABI": "0"})
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    text = err.decode()
    assert "[sandbox].require = true" in text and "Landlock ABI 0" in text
    assert "filesystem rules (Landlock)" in text and "TCP connect and bind rules" in text
    # and with a kernel that has it all, the same configuration starts
    with running_daemon(config) as daemon:
        out = daemon.agentctl("send", "echo", '{"x": 1}', "--wait")
        assert out.returncode == 0
        assert daemon.stop() == 0


def test_without_landlock_warn_runs_and_names_what_is_not_protected(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra='\n[sandbox]\nmode = "warn"\n')
    with running_daemon(config, env={"AGENTD_SANDBOX_MAX_ABI": "3"}) as daemon:
        out = daemon.agentctl("send", "echo", '{"x": 1}', "--wait")
        assert out.returncode == 0 and json.loads(out.stdout) == {"x": 1}
        echo = _ps(daemon)["echo"]["sandbox"]
        assert daemon.stop() == 0
    log = daemon.stderr_path.read_text()
    assert "this kernel offers Landlock ABI 3 (mode warn); NOT protected:" in log
    assert "TCP connect and bind rules (Landlock ABI 4)" in log
    assert "signal and abstract unix socket scoping (Landlock ABI 6)" in log
    assert "filesystem rules" not in log.split("NOT protected:")[1].split("\n")[0]
    assert echo["landlock_abi"] == 3 and len(echo["missing"]) == 3


def test_doctor_prints_what_is_and_is_not_protected(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra="\n[sandbox]\nrequire = true\n")

    def doctor(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "agentd.cli.agentd", "--config", str(config), "doctor"]
        return subprocess.run(
            command, env={**os.environ, **env}, capture_output=True, text=True, timeout=60
        )

    full = doctor({})
    assert full.returncode == 0, full.stdout
    assert "ok     TCP connect and bind by port: enforced" in full.stdout
    assert "user namespaces" in full.stdout and "cgroup v2 delegation" in full.stdout
    none = doctor({"AGENTD_SANDBOX_MAX_ABI": "0"})
    assert none.returncode == 1
    assert "MISS Landlock: not available" in none.stdout
    assert "MISS   filesystem rules (read, write, execute): NOT protected" in none.stdout
    assert "agentd refuses to start: Landlock ABI 0 < 6" in none.stdout


def test_the_sandbox_bench_runs_in_smoke_mode() -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "sandbox.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    ratios = result["ratio_enforce_over_off"]
    assert ratios["spawn_to_ready_median"] > 0 and ratios["echo_round_trip_median"] > 0
    assert result["enforce"]["spawn_to_ready"]["p50_us"] > 0
    assert result["isolated_tool_call"]["ratio_enforce_over_off_median"] > 0
