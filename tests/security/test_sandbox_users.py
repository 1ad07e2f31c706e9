"""A uid per agent (docs/sandbox.md, "A uid per agent"): when the daemon may switch users (it
runs as root here, as the systemd unit does), each agent's replicas run under a uid of their
own, in a mount namespace where only what they were granted is there at all.

The attack: a graph's child process is dumpable again after its exec and inherits the
replica's environment, credentials included; a hostile replica of another agent reads its
`/proc/<pid>/environ`. Landlock stops that between domains (its ptrace rule) where the kernel
has Landlock; a different uid stops it everywhere. The control runs the same attack without
Landlock and with `[sandbox].users = "off"`: the credentials are read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.sandbox import can_mount, can_switch_users
from tests.harness import REPO, TEST_AGENTS, DaemonProcess, running_daemon, write_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (can_switch_users() and can_mount()),
        reason="needs a test run as root (CAP_SETUID, CAP_SETGID, CAP_SYS_ADMIN)",
    ),
]


def _config(directory: Path, sandbox: str = "") -> Path:
    agents = directory / "agents"
    agents.mkdir()
    for name in ("hostile", "keeper"):
        (agents / name).symlink_to(TEST_AGENTS / name)
    (agents / "echo").symlink_to(REPO / "agents" / "echo")
    return write_config(
        directory, agents_dir=agents, extra=f"[autoscale]\nenabled = false\n{sandbox}"
    )


def _ask(daemon: DaemonProcess, agent: str, message: dict[str, Any]) -> dict[str, Any]:
    out = daemon.agentctl("send", agent, json.dumps(message), "--wait", timeout_s=120)
    assert out.returncode == 0, out.stderr
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


def _ps(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    out = daemon.agentctl("--json", "ps")
    assert out.returncode == 0, out.stderr
    return {a["agent"]: a for a in json.loads(out.stdout)}


def _attack_keepers_child(daemon: DaemonProcess) -> dict[str, Any]:
    kept = _ask(daemon, "keeper", {})
    report = _ask(
        daemon,
        "hostile",
        {"other_agent": "keeper", "other_pid": kept["pid"], "daemon_pid": daemon.pid},
    )
    return {"kept": kept, **report}


@pytest.fixture(scope="module")
def own_uids(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with running_daemon(_config(tmp_path_factory.mktemp("uids"))) as daemon:
        yield daemon
        assert daemon.stop() == 0


def test_each_agent_runs_under_a_uid_of_its_own(own_uids: DaemonProcess) -> None:
    rows = _ps(own_uids)
    uids = {name: rows[name]["sandbox"]["uid"] for name in ("hostile", "keeper", "echo")}
    assert len(set(uids.values())) == 3, uids
    assert all(uid is not None and uid >= 3_000_000 for uid in uids.values()), uids
    kept = _ask(own_uids, "keeper", {})
    assert kept["uid"] == uids["keeper"]
    # kept across restarts: the map lives in the state directory
    book = json.loads((own_uids.dir / "state" / "sandbox-uids.json").read_text())
    assert book == uids
    # the replica's own folders are its uid's; the state directory stays the daemon's
    scratch = own_uids.dir / "state" / "scratch" / "keeper"
    assert scratch.stat().st_uid == uids["keeper"]
    assert (own_uids.dir / "state").stat().st_uid == os.geteuid()


def test_another_agents_child_keeps_its_secrets(own_uids: DaemonProcess) -> None:
    report = _attack_keepers_child(own_uids)
    for where in ("in_process", "subprocess"):
        outcome = report[where]["read other agent environment"]
        assert outcome.startswith("denied: PermissionError"), (where, outcome)
        # the state directory is not even there in the replica's namespace (or denied)
        for attempt in ("read operator creds", "read signing key", "write decision log"):
            assert report[where][attempt].startswith("denied"), (where, attempt, report[where])
        assert report[where]["signal the daemon"].startswith("denied: PermissionError")
    # the daemon keeps serving
    assert _ask(own_uids, "echo", {"still": "here"}) == {"still": "here"}


@pytest.mark.parametrize("users", ["auto", "off"])
def test_without_landlock_the_uid_alone_keeps_the_childs_secrets(
    tmp_path: Path, users: str
) -> None:
    """Where the kernel has no Landlock (simulated), Landlock's own ptrace rule is gone too:
    with a uid per agent the child's credentials stay unread; the control (`users = "off"`)
    reads them."""
    config = _config(tmp_path, f'\n[sandbox]\nmode = "warn"\nusers = "{users}"\n')
    with running_daemon(config, env={"AGENTD_SANDBOX_MAX_ABI": "0"}) as daemon:
        report = _attack_keepers_child(daemon)
        assert daemon.stop() == 0
    for where in ("in_process", "subprocess"):
        outcome = report[where]["read other agent environment"]
        if users == "auto":
            assert report["kept"]["uid"] != os.geteuid()
            assert outcome.startswith("denied: PermissionError"), (where, outcome)
            # the state directory's secrets are not in the replica's mount namespace
            assert report[where]["read signing key"].startswith("denied"), report[where]
        else:
            assert report["kept"]["uid"] == os.geteuid()
            assert outcome == "allowed", (where, outcome)
            assert report[where]["read signing key"] == "allowed", report[where]
