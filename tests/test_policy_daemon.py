"""Policy in the running daemon: the router and the control plane ask the decision point, record
its answer with the rule, and reloads keep the old policy when the new one is broken."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from tests.harness import REPO, DaemonProcess, decision_records, running_daemon, write_config

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("policy") / "policies"
    shutil.copytree(REPO / "policies", directory)
    return directory


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, policy_dir: Path) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("daemon")
    config = write_config(directory, policy="enforce")
    config.write_text(config.read_text().replace(str(REPO / "policies"), str(policy_dir)))
    with running_daemon(config) as d:
        yield d
        assert d.stop() == 0


def records(daemon: DaemonProcess, kind: str) -> list[dict[str, object]]:
    time.sleep(0.2)  # the recorder writes in 50 ms batches
    return decision_records(daemon.dir / "state", kind)


def test_the_local_console_may_send_and_status_names_the_policy(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("send", "echo", '{"ok": 1}', "--wait")
    assert out.returncode == 0 and json.loads(out.stdout) == {"ok": 1}
    status = json.loads(daemon.agentctl("--json", "status").stdout)
    assert status["policy"]["mode"] == "enforce" and len(status["policy"]["version"]) == 64
    routed = records(daemon, "message.routed")
    assert routed[-1]["rule"] == "policy.csv:70"  # role:operator may send to agent:*
    assert routed[-1]["lineage"]["policy_version"] == status["policy"]["version"]


def test_a_viewer_may_look_but_not_act(daemon: DaemonProcess) -> None:
    assert daemon.agentctl("--operator", "carol", "ps").returncode == 0
    for verb in (["scale", "echo", "2"], ["stop", "echo"], ["policy", "reload"]):
        out = daemon.agentctl("--operator", "carol", *verb)
        assert out.returncode == 1, verb
        assert "operator 'carol' may not use" in out.stderr and "[forbidden]" in out.stderr
    denied = [r for r in records(daemon, "control.command") if r.get("decision") == "denied"]
    assert {r["operator"] for r in denied} == {"carol"} and len(denied) == 3
    assert all(r["rule"] == "model.conf:15" for r in denied)
    unknown = daemon.agentctl("--operator", "mallory", "status")
    assert unknown.returncode == 1 and "[forbidden]" in unknown.stderr


async def test_an_agent_may_only_send_where_policy_allows(daemon: DaemonProcess) -> None:
    nc = await nats.connect(daemon.url, **daemon.nats_options())
    try:
        reply = await nc.request("agentd.out.echo.intake", b'{"payload": {}}', timeout=5)
        answer = json.loads(reply.data)
        # intake is not running in this daemon: unknown recipient comes first
        assert answer["error"]["code"] == "unknown_recipient"
        reply = await nc.request("agentd.out.intruder.echo", b'{"payload": {}}', timeout=5)
        answer = json.loads(reply.data)
        assert answer["error"]["code"] == "policy_denied"
        assert answer["error"]["rule"] == "model.conf:15"
    finally:
        await nc.close()
    refused = records(daemon, "message.refused")
    assert any(r["inputs"]["from"] == "intruder" for r in refused)  # type: ignore[index]


def test_policy_test_and_explain(daemon: DaemonProcess) -> None:
    tested = daemon.agentctl("policy", "test")
    assert tested.returncode == 0, tested.stderr
    assert "golden cases pass" in tested.stdout
    explained = daemon.agentctl(
        "policy", "explain", "underwriter", "tool:loan.approve", "call", '{"amount": 80000}'
    )
    assert explained.returncode == 0
    assert "decision: DENY by constraints.toml" in explained.stdout
    assert "max" in explained.stdout


def test_a_broken_policy_is_rejected_with_file_and_line_and_the_old_one_stays(
    daemon: DaemonProcess, policy_dir: Path
) -> None:
    before = json.loads(daemon.agentctl("--json", "status").stdout)["policy"]["version"]
    csv = policy_dir / "policy.csv"
    good = csv.read_text()
    csv.write_text(good + "p, echo, agent:echo, send\n")
    broken = daemon.agentctl("policy", "reload")
    assert broken.returncode == 1
    lines = len(good.splitlines()) + 1
    assert f"policy.csv:{lines}" in broken.stderr and "4 fields" in broken.stderr
    assert json.loads(daemon.agentctl("--json", "status").stdout)["policy"]["version"] == before
    assert daemon.agentctl("send", "echo", "{}", "--wait").returncode == 0
    rejected = [r for r in records(daemon, "policy.reloaded") if r["decision"] == "rejected"]
    assert rejected and f"policy.csv:{lines}" in str(rejected[-1]["reason"])

    # revoke the operators' right to send, by SIGHUP: sends are refused at once
    csv.write_text(good + "p, role:operator, agent:echo, send, deny\n")
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while json.loads(daemon.agentctl("--json", "status").stdout)["policy"]["version"] == before:
        assert time.monotonic() < deadline, "SIGHUP did not reload the policy"
        time.sleep(0.1)
    refused = daemon.agentctl("send", "echo", "{}")
    assert refused.returncode == 1 and "policy_denied" in refused.stderr
    csv.write_text(good)
    restored = daemon.agentctl("--json", "policy", "reload")
    assert json.loads(restored.stdout) == {"mode": "enforce", "version": before, "changed": True}
    assert daemon.agentctl("send", "echo", "{}", "--wait").returncode == 0
