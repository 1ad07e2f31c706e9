"""Operators by role: what a viewer may not do, and that a credential's role is what counts."""

from __future__ import annotations

import json

import pytest

from tests.harness import DaemonProcess
from tests.security.support import records_where

pytestmark = pytest.mark.integration

ACTIONS = {
    "scale": ["scale", "gamma", "2"],
    "stop": ["stop", "gamma"],
    "reload": ["policy", "reload"],
    "approve": ["approve", "no-such-approval"],
    "revoke": ["agents", "revoke", "gamma"],
    "add operator": ["operators", "add", "eve", "--role", "admin"],
}


def issue(secure: DaemonProcess, name: str, role: str) -> str:
    path = secure.state_dir / "credentials" / "operators" / f"{name}.creds"
    if not path.exists():
        out = secure.agentctl("operators", "add", name, "--role", role)
        assert out.returncode == 0, out.stderr
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    return str(path)


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_a_viewer_cannot_act(secure: DaemonProcess, action: str) -> None:
    vera = issue(secure, "vera", "viewer")
    out = secure.agentctl("--creds", vera, *ACTIONS[action])
    assert out.returncode == 1, out.stdout
    assert "operator 'vera' may not use" in out.stderr and "[forbidden]" in out.stderr
    assert records_where(
        secure,
        "control.command",
        lambda r: r.get("operator") == "vera" and r.get("decision") == "denied",
    )


def test_a_viewer_may_look(secure: DaemonProcess) -> None:
    vera = issue(secure, "vera", "viewer")
    assert secure.agentctl("--creds", vera, "status").returncode == 0
    listed = secure.agentctl("--creds", vera, "--json", "agents")
    assert listed.returncode == 0, listed.stderr
    assert {"alpha", "beta", "gamma"} <= {row["agent"] for row in json.loads(listed.stdout)}
    table = secure.agentctl("--creds", vera, "agents").stdout.splitlines()
    assert table[0].split()[:3] == ["AGENT", "KIND", "VERSION"]
    assert any(line.split()[:2] == ["alpha", "configured"] for line in table), table


def test_an_operator_by_credential_may_scale(secure: DaemonProcess) -> None:
    olga = issue(secure, "olga", "operator")
    out = secure.agentctl("--creds", olga, "scale", "gamma", "1")
    assert out.returncode == 0, out.stderr
    assert records_where(
        secure,
        "control.command",
        lambda r: r.get("operator") == "olga" and r.get("decision") == "scale",
    )


def test_operator_flag_does_not_borrow_credentials(secure: DaemonProcess) -> None:
    vera = issue(secure, "vera", "viewer")
    out = secure.agentctl("--creds", vera, "--operator", "local", "scale", "gamma", "1")
    assert out.returncode == 2 and "--operator does not change who you are" in out.stderr
