"""The operator console against a real daemon: who owns an agent's count (a manual scale pins
it), `start` reviving an agent past its restart intensity, `runs` filters and pages, global
flags on either side of the verb, a closed pipe, and `ask` losing its NATS connection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.eventually import eventually
from tests.harness import (
    REPO,
    TEST_AGENTS,
    DaemonProcess,
    decision_records,
    descendants,
    running_daemon,
    send_and_collect,
    write_config,
)

pytestmark = pytest.mark.integration

# dies 0.2 s after its marker file appears (and at every restart while it is there)
FLAKY_GRAPH = """
import os
import threading
import time
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph

MARKER = Path(__file__).with_name("crash-now")


def _watch() -> None:
    while True:
        time.sleep(0.2)
        if MARKER.exists():
            os._exit(3)


threading.Thread(target=_watch, daemon=True).start()


def echo(state: dict[str, Any]) -> dict[str, Any]:
    return dict(state)


builder = StateGraph(dict)
builder.add_node("echo", echo)
builder.add_edge(START, "echo")
builder.add_edge("echo", END)
graph = builder.compile()
"""

SLEEPER_GRAPH = """
import asyncio
from typing import Any

from langgraph.graph import END, START, StateGraph


async def sleep(state: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(state["seconds"]))
    return dict(state)


builder = StateGraph(dict)
builder.add_node("sleep", sleep)
builder.add_edge(START, "sleep")
builder.add_edge("sleep", END)
graph = builder.compile()
"""


def _agent(agents: Path, name: str, graph: str, extra: str = "") -> None:
    (agents / name).mkdir(parents=True)
    (agents / name / "agent.toml").write_text(
        f'name = "{name}"\ngraph = "{name}_graph:graph"\ncheckpoint = false\n'
        f"autoscale = false\n{extra}"
    )
    (agents / name / f"{name}_graph.py").write_text(graph)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("console")
    agents = directory / "agents"
    agents.mkdir()
    (agents / "echo").symlink_to(REPO / "agents" / "echo")
    (agents / "poison").symlink_to(TEST_AGENTS / "poison")
    _agent(
        agents,
        "flaky",
        FLAKY_GRAPH,
        "[restart]\nmax_restarts = 2\nwindow_s = 60\nbackoff_initial_s = 0.05\n",
    )
    config = write_config(
        directory,
        agents_dir=agents,
        extra="[autoscale]\ninterval_s = 0.3\ncooldown_s = 0.6\n",
    )
    env = {"POISON_FIX": str(directory / "no-fix-yet")}
    with running_daemon(config, env=env) as d:
        yield d
        assert d.stop() == 0


def ctl_json(daemon: DaemonProcess, *args: str) -> Any:
    out = daemon.agentctl(*args, "--json")
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()[-3000:]}"
    return json.loads(out.stdout)


def ps_of(daemon: DaemonProcess, agent: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = ctl_json(daemon, "ps")
    return next(row for row in rows if row["agent"] == agent)


# -- 9: who owns the count ------------------------------------------------------------------


def test_a_manual_scale_pins_the_count_until_the_autoscaler_gets_it_back(
    daemon: DaemonProcess,
) -> None:
    assert ps_of(daemon, "echo")["scaled_by"] == "autoscaler"
    out = daemon.agentctl("scale", "echo", "3", "--timeout", "60")
    assert out.returncode == 0, out.stderr
    assert "pinned at 3" in out.stdout and "agentctl autoscale echo on" in out.stdout
    # idle: the autoscaler would take it down one replica per cooldown (0.6 s); ten ticks pass
    time.sleep(3)
    row = ps_of(daemon, "echo")
    assert (len(row["replicas"]), row["scaled_by"]) == (3, "pinned:local"), row
    assert "PINNED:LOCAL" in daemon.agentctl("ps").stdout.upper()

    back = ctl_json(daemon, "autoscale", "echo", "on")
    assert back["scaled_by"] == "autoscaler"
    eventually(lambda: len(ps_of(daemon, "echo")["replicas"]) == 1, 20, "idle echo scaled down")

    # off pins the count where it is, without scaling
    assert ctl_json(daemon, "autoscale", "echo", "off")["scaled_by"] == "pinned:local"
    assert ctl_json(daemon, "autoscale", "echo", "on")["scaled_by"] == "autoscaler"

    records = eventually(
        lambda: (r := decision_records(daemon.state_dir, "agent.autoscale")) and len(r) >= 4 and r,
        10,
        "agent.autoscale records",
    )
    assert [r["decision"] for r in records[:4]] == ["off", "on", "off", "on"], records
    assert "scaled echo to 3 by hand" in records[0]["reason"]
    assert records[0]["attributes"]["operator"] == "local"


def test_autoscale_on_for_an_agent_the_autoscaler_never_manages_says_why(
    daemon: DaemonProcess,
) -> None:
    out = daemon.agentctl("autoscale", "poison", "on")
    assert out.returncode == 1
    assert "autoscale = false" in out.stderr and "not_autoscaled" in out.stderr
    assert ps_of(daemon, "poison")["scaled_by"] == "operator"


# -- 11: start revives an agent past its restart intensity -----------------------------------


def test_start_revives_an_agent_marked_failed_after_its_restart_intensity(
    daemon: DaemonProcess,
) -> None:
    marker = daemon.config.parent / "agents" / "flaky" / "crash-now"
    marker.write_text("")
    eventually(
        lambda: [r["state"] for r in ps_of(daemon, "flaky")["replicas"]] == ["failed"],
        60,
        "flaky marked failed after max_restarts",
    )
    marker.unlink()
    out = daemon.agentctl("start", "flaky", "--json", "--timeout", "60")
    assert out.returncode == 0, out.stderr
    started = json.loads(out.stdout)
    assert started["revived"] == ["flaky-0"] and started["state"] == "running", started
    row = ps_of(daemon, "flaky")
    assert [r["state"] for r in row["replicas"]] == ["running"], row
    answer = daemon.agentctl("ask", "flaky", '{"back": true}', timeout_s=60)
    assert answer.returncode == 0 and '"back": true' in answer.stdout, answer.stderr


# -- 11: runs filters and pages --------------------------------------------------------------


def test_runs_status_filters_find_runs_behind_newer_ones_and_large_answers_come_in_pages(
    daemon: DaemonProcess,
) -> None:
    daemon.agentctl("send", "poison", '{"poison": true}')
    eventually(
        lambda: ctl_json(daemon, "runs", "--agent", "poison", "--status", "dead"),
        60,
        "the poison message dead-lettered",
    )
    ok = [{"poison": False, "i": i} for i in range(30)]
    anyio.run(lambda: send_and_collect(daemon.url, "poison", ok, timeout_s=90))
    # the dead run lies behind 30 newer runs (90+ records); read back 10 records at a time
    dead = eventually(
        lambda: ctl_json(
            daemon, "runs", "--agent", "poison", "--status", "dead", "--scan-records", "10"
        ),
        10,
        "a dead run behind newer ones",
    )
    assert len(dead) == 1 and dead[0]["status"] == "dead", dead
    oks = ctl_json(daemon, "runs", "--agent", "poison", "--status", "ok", "--limit", "100")
    assert len(oks) >= 30 and {r["status"] for r in oks} == {"ok"}
    # the same answer in pages of ~2 KiB: every run once, newest first
    paged = ctl_json(daemon, "runs", "--agent", "poison", "--limit", "100", "--page-bytes", "2000")
    whole = ctl_json(daemon, "runs", "--agent", "poison", "--limit", "100")
    assert [r["message_id"] for r in paged] == [r["message_id"] for r in whole]
    assert len(paged) == len({r["message_id"] for r in paged}) >= 31


# -- 10: global flags and closed pipes -------------------------------------------------------


def test_global_flags_work_before_and_after_the_verb(daemon: DaemonProcess) -> None:
    before = daemon.agentctl("--json", "--timeout", "9", "status")
    after = daemon.agentctl("status", "--json", "--timeout", "9")
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert json.loads(before.stdout)["pid"] == json.loads(after.stdout)["pid"] == daemon.pid
    nested = daemon.agentctl("dlq", "list", "--json", "--limit", "5")
    assert nested.returncode == 0 and isinstance(json.loads(nested.stdout), list)
    # after the verb wins: a bad URL there is the one used
    wrong = daemon.agentctl("ps", "--url", "nats://127.0.0.1:1", "--timeout", "1")
    assert wrong.returncode == 1 and "127.0.0.1:1" in wrong.stderr


def test_agentd_takes_config_after_its_command(daemon: DaemonProcess) -> None:
    cmd = [sys.executable, "-m", "agentd.cli.agentd"]
    out = subprocess.run(
        [*cmd, "config", "check", "--config", str(daemon.config)], capture_output=True, text=True
    )
    assert out.returncode == 0 and f"ok: {daemon.config}" in out.stdout, out.stderr
    missing = subprocess.run(
        [*cmd, "--config", str(daemon.config), "config", "check", "--config", "/nonexistent"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "/nonexistent" in missing.stderr


def test_a_closed_pipe_ends_agentctl_quietly(daemon: DaemonProcess) -> None:
    """`agentctl --json ps | head -c1`: no BrokenPipeError traceback, the status of a CLI
    that SIGPIPE ended (141, as a shell shows it)."""
    for order in (("--json", "ps"), ("ps", "--json")):
        # `true` reads nothing and is gone long before agentctl has its answer to write
        shell = (
            f"{sys.executable} -m agentd.cli.agentctl --url {daemon.url} "
            f"--config {daemon.config} {' '.join(order)} | true; echo ${{PIPESTATUS[0]}} >&2"
        )
        out = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=60)
        assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr
        assert out.stderr.strip().splitlines()[-1] == "141", out.stderr


# -- 11: ask that loses its connection -------------------------------------------------------


def test_ask_whose_nats_connection_drops_says_so(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    _agent(agents, "sleeper", SLEEPER_GRAPH, "concurrency = 1\n")
    with running_daemon(write_config(tmp_path, agents_dir=agents)) as daemon:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentd.cli.agentctl",
                "--url",
                daemon.url,
                "--config",
                str(daemon.config),
                "ask",
                "sleeper",
                '{"seconds": 60}',
                "--wait-timeout",
                "150",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # the message is accepted once its run starts on the replica
        eventually(
            lambda: any(r["inflight"] for r in ps_of(daemon, "sleeper")["replicas"]),
            30,
            "the run started",
        )
        # while it runs: one run `running`, and a second message `pending` behind it
        queued = ctl_json(daemon, "send", "sleeper", '{"seconds": 0}')["message_id"]
        running = eventually(
            lambda: ctl_json(daemon, "runs", "--agent", "sleeper", "--status", "running"),
            15,
            "the running run listed",
        )
        pending = ctl_json(daemon, "runs", "--agent", "sleeper", "--status", "pending")
        assert [r["status"] for r in running] == ["running"], running
        assert [r["message_id"] for r in pending] == [queued], pending
        nats = [pid for pid in descendants(daemon.pid) if _is_nats_server(pid)]
        assert nats, "no embedded nats-server under the daemon"
        started = time.monotonic()
        os.kill(nats[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - started < 30
        assert proc.returncode == 1, err
        assert "lost the connection to NATS" in err and "[disconnected]" in err, err
        assert "did not finish within" not in err
        assert "agentctl runs --agent sleeper" in err


def _is_nats_server(pid: int) -> bool:
    try:
        return b"nats-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
