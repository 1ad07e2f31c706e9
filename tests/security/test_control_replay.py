"""Operators' signed requests (issue 18, item 11): an exact replay of a state-changing request
is refused within the signature's window (read-only verbs may be replayed), and the role an
operator's credentials were issued with is the most they may do, whatever policy.csv's role
links say (docs/identity.md, "Roles")."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from agentd.bus import Credentials
from agentd.identity import AUTH_HEADER, public_key_of, sign, sign_request
from tests.harness import DaemonProcess, admin_credentials
from tests.security.support import connected, records_where, request_json

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def send_twice(
    secure: DaemonProcess, verb: str, body: bytes, headers: dict[str, str]
) -> tuple[Any, Any]:
    subject = f"agentd.ctl.{verb}"
    async with connected(secure, admin_credentials(secure.url)) as admin:
        first = await request_json(admin.nc, subject, body, headers=headers, timeout=30)
        second = await request_json(admin.nc, subject, body, headers=headers, timeout=30)
    return first, second


async def test_an_exact_replay_of_a_state_changing_request_is_refused(
    secure: DaemonProcess,
) -> None:
    admin = admin_credentials(secure.url)
    body = json.dumps({"v": 1, "args": {"agent": "gamma"}}).encode()
    headers = sign_request(admin, "agentd.ctl.start", body)
    first, replay = await send_twice(secure, "start", body, headers)
    assert first["ok"] is True, first
    assert replay["ok"] is False and replay["error"]["code"] == "replayed", replay
    assert records_where(
        secure,
        "control.command",
        lambda r: r.get("rule") == "replay" and r.get("attributes", {}).get("verb") == "start",
    )
    # control: the same request signed afresh (a new nonce) is accepted, once
    fresh, fresh_replay = await send_twice(secure, "start", body, signed(admin, "start", body))
    assert fresh["ok"] is True, fresh
    assert fresh_replay["error"]["code"] == "replayed", fresh_replay


async def test_control_a_read_only_request_may_be_replayed(secure: DaemonProcess) -> None:
    admin = admin_credentials(secure.url)
    body = b'{"v": 1}'
    first, replay = await send_twice(secure, "ps", body, sign_request(admin, "agentd.ctl.ps", body))
    assert first["ok"] is True and replay["ok"] is True, (first, replay)


def signed(creds: Credentials, verb: str, body: bytes) -> dict[str, str]:
    return sign_request(creds, f"agentd.ctl.{verb}", body)


def old_header(creds: Credentials, subject: str, body: bytes) -> dict[str, str]:
    """The three-part header of an agentctl from before nonces."""
    assert creds.nkey_seed
    at = f"{time.time():.3f}"
    signature = sign(creds.nkey_seed, f"{subject}\n{at}\n".encode() + body)
    key = public_key_of(creds.nkey_seed)
    return {AUTH_HEADER: f"{key} {at} {base64.b64encode(signature).decode()}"}


async def test_a_request_without_a_nonce_may_only_look(secure: DaemonProcess) -> None:
    admin = admin_credentials(secure.url)
    start = json.dumps({"v": 1, "args": {"agent": "gamma"}}).encode()
    async with connected(secure, admin) as who:
        looked = await request_json(
            who.nc, "agentd.ctl.ps", b"{}", headers=old_header(admin, "agentd.ctl.ps", b"{}")
        )
        acted = await request_json(
            who.nc, "agentd.ctl.start", start, headers=old_header(admin, "agentd.ctl.start", start)
        )
    assert looked["ok"] is True, looked
    assert acted["ok"] is False and "needs a request nonce" in acted["error"]["message"], acted


async def test_an_issued_viewer_is_a_viewer_whatever_policy_links_say(
    secure: DaemonProcess,
) -> None:
    """policy.csv has `g, operator:alice, role:admin`; alice's credentials say viewer."""
    out = secure.agentctl("--json", "operators", "add", "alice", "--role", "viewer")
    assert out.returncode == 0, out.stderr
    assert "warning:" in out.stderr and "role:admin" in out.stderr, out.stderr
    assert "authoritative" in json.loads(out.stdout)["warning"]
    assert "role:admin" in secure.log()  # and in the daemon's log
    alice = Credentials.load(secure.state_dir / "credentials" / "operators" / "alice.creds")
    start = json.dumps({"v": 1, "args": {"agent": "gamma"}}).encode()
    async with connected(secure, alice) as who:
        acted = await request_json(
            who.nc,
            "agentd.ctl.start",
            start,
            headers=sign_request(alice, "agentd.ctl.start", start),
        )
        looked = await request_json(
            who.nc, "agentd.ctl.ps", b"{}", headers=sign_request(alice, "agentd.ctl.ps", b"{}")
        )
    assert acted["ok"] is False and acted["error"]["code"] == "forbidden", acted
    assert "issued with role 'viewer'" in acted["error"]["message"], acted
    assert looked["ok"] is True, looked  # control: what a viewer may do, alice may
    denied = records_where(
        secure,
        "control.command",
        lambda r: r.get("operator") == "alice" and r.get("decision") == "denied",
    )
    assert denied, "the refusal was not recorded"
