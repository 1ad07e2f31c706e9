"""Registration, leases and revocation: a revoked or lapsed identity is refused within the
bound (revocation: 1 s; a lapsed lease: lease_s + lease_check_s + a reload)."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest

from agentd.api import call_api, register_with_token
from agentd.bus import Credentials
from agentd.cli._client import ControlClient
from agentd.errors import ControlError
from tests.harness import DaemonProcess, admin_credentials
from tests.security.conftest import LEASE_S
from tests.security.support import (
    RawConnection,
    agent_creds,
    connected,
    records_where,
    refused,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SPEC = {"version": "1.0.0", "description": "a test partner", "tools": ["credit.score"]}


def bootstrap_token(secure: DaemonProcess) -> str:
    return (secure.state_dir / "credentials" / "bootstrap.token").read_text().strip()


async def register(secure: DaemonProcess, name: str) -> tuple[Credentials, dict[str, Any]]:
    return await register_with_token(
        secure.url, token=bootstrap_token(secure), name=name, spec=SPEC
    )


async def test_register_heartbeat_and_revoke_within_a_second(secure: DaemonProcess) -> None:
    creds, registration = await register(secure, "revokee")
    assert registration["agent"] == "revokee" and registration["lease_s"] == LEASE_S
    assert "llm_token" not in registration  # the shared bootstrap inbox carries no secret
    async with connected(secure, creds) as agent:
        beat = await call_api(agent.nc, "heartbeat", "revokee")
        assert beat["llm_token"].startswith("agentd-")
    watch, hello = await RawConnection.open(secure, creds)
    assert hello == b"PONG"
    async with ControlClient(secure.url, credentials=admin_credentials(secure.url)) as ctl:
        listed = {r["agent"]: r for r in await ctl.call("agents")}
        assert listed["revokee"]["kind"] == "registered"
        assert 0 < listed["revokee"]["lease_expires_in_s"] <= LEASE_S
        started = time.monotonic()
        answer = await ctl.call("agents.revoke", {"agent": "revokee"})
        said = await watch.closed_by_server(timeout_s=1.0 - (time.monotonic() - started))
    assert time.monotonic() - started < 1.0 and answer["revoked_in_s"] < 1.0
    assert said == b""  # nothing more for it: the server closed the connection
    await watch.aclose()
    assert await refused(secure, creds)
    assert records_where(secure, "agent.revoked", lambda r: r.get("agent") == "revokee")


async def test_a_lapsed_lease_is_revoked(secure: DaemonProcess) -> None:
    creds, _ = await register(secure, "lapser")
    watch, hello = await RawConnection.open(secure, creds)
    assert hello == b"PONG"
    started = time.monotonic()
    await watch.closed_by_server(timeout_s=LEASE_S + 1.0)  # lease + check + reload, with slack
    await watch.aclose()
    assert LEASE_S - 0.5 < time.monotonic() - started < LEASE_S + 1.0
    assert await refused(secure, creds)
    assert records_where(secure, "agent.lease_expired", lambda r: r.get("agent") == "lapser")
    listed = json.loads(secure.agentctl("--json", "agents").stdout)
    assert "lapser" not in {r["agent"] for r in listed}


async def test_heartbeats_keep_a_lease(secure: DaemonProcess) -> None:
    creds, _ = await register(secure, "outsider")
    async with connected(secure, creds) as agent:
        for _ in range(4):  # 2 x LEASE_S in all: without heartbeats it would have lapsed
            beat = await call_api(agent.nc, "heartbeat", "outsider")
            assert beat["lease_expires_at"] > time.time() + LEASE_S / 2
            await anyio.sleep(LEASE_S / 2)
        # scoped like a replica: it speaks as itself only
        assert await agent.publish_refused("agentd.out.alpha.beta")
        reply = await agent.nc.request("agentd.out.outsider.alpha", b'{"payload": 1}', timeout=5)
        assert json.loads(reply.data)["error"]["code"] == "policy_denied"  # reached the router
    watch, _ = await RawConnection.open(secure, creds)
    async with connected(secure, None) as daemon_rights:  # the daemon may act for anyone
        reply = await daemon_rights.nc.request(
            "agentd.api.deregister.outsider", b'{"v": 1}', timeout=5
        )
    assert json.loads(reply.data)["result"] == {"agent": "outsider", "deregistered": True}
    await watch.closed_by_server(timeout_s=1.0)
    await watch.aclose()
    assert await refused(secure, creds)
    assert records_where(secure, "agent.deregistered", lambda r: r.get("agent") == "outsider")


async def test_a_pre_authorized_identity_registers_without_the_token(
    secure: DaemonProcess,
) -> None:
    out = secure.agentctl("--json", "agents", "issue", "preauth")
    assert out.returncode == 0, out.stderr
    creds = Credentials.load(__import__("pathlib").Path(json.loads(out.stdout)["creds"]))
    async with connected(secure, creds) as agent:
        registered = await call_api(agent.nc, "register", "preauth", {"spec": SPEC})
        assert registered["llm_token"].startswith("agentd-")  # its own inbox: safe for a secret
        with pytest.raises(ControlError) as err:  # one name per identity
            await call_api(agent.nc, "register", "preauth", {"spec": SPEC, "name": "alpha"})
        assert err.value.code == "forbidden"
    watch, _ = await RawConnection.open(secure, creds)
    async with connected(secure, None) as daemon_rights:
        await call_api(daemon_rights.nc, "deregister", "preauth")
    await watch.closed_by_server(timeout_s=1.0)
    await watch.aclose()
    assert await refused(secure, creds)


@pytest.mark.parametrize(
    ("name", "token", "code"),
    [
        ("mallory", None, "forbidden"),  # policy does not let mallory register
        ("outsider", "wrong-token", "unauthenticated"),
        ("alpha", None, "forbidden"),  # a configured agent's name
    ],
)
async def test_registration_refusals(
    secure: DaemonProcess, name: str, token: str | None, code: str
) -> None:
    from agentd.control import decode_reply, encode_request
    from agentd.identity import new_user_seed, public_key_of

    args = {
        "name": name,
        "public_key": public_key_of(new_user_seed()),
        "token": token or bootstrap_token(secure),
        "spec": SPEC,
    }
    async with connected(secure, None) as nc:
        reply = await nc.nc.request("agentd.api.register", encode_request(args), timeout=5)
    with pytest.raises(ControlError) as err:
        decode_reply(reply.data)
    assert err.value.code == code


def test_agentctl_revokes_a_configured_agent(secure: DaemonProcess) -> None:
    creds = Credentials.load(agent_creds(secure, "delta"))
    out = secure.agentctl("agents", "revoke", "delta")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("revoked delta in ")
    assert anyio.run(refused, secure, creds)
    assert records_where(secure, "agent.revoked", lambda r: r.get("agent") == "delta")
    deadline = time.monotonic() + 20
    while True:  # its replicas drain and stop
        ps = json.loads(secure.agentctl("--json", "ps").stdout)
        if [a["replicas"] for a in ps if a["agent"] == "delta"] == [[]]:
            break
        assert time.monotonic() < deadline, ps
        time.sleep(0.2)
    # starting it again issues a new key; the old one stays refused
    # a start waits for the new replica: give a loaded machine more than the default 5 s
    assert secure.agentctl("--timeout", "60", "start", "delta").returncode == 0
    out = secure.agentctl("send", "delta", '{"back": true}', "--wait")
    assert out.returncode == 0 and json.loads(out.stdout) == {"back": True}, out.stderr
    fresh = Credentials.load(agent_creds(secure, "delta"))
    assert fresh.nkey_seed != creds.nkey_seed and anyio.run(refused, secure, creds)
