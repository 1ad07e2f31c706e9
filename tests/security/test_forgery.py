"""Forged headers and payload fields do not change who is speaking."""

from __future__ import annotations

import base64
import json
import time

import anyio
import pytest

from agentd.bus import Credentials
from agentd.identity import AUTH_HEADER, public_key_of, sign, sign_request
from tests.harness import DaemonProcess, admin_credentials
from tests.security.support import agent_creds, connected, records_where, request_json

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def operator(secure: DaemonProcess, name: str, role: str | None = None) -> Credentials:
    path = secure.state_dir / "credentials" / "operators" / f"{name}.creds"
    if not path.exists():
        out = secure.agentctl("operators", "add", name, *(["--role", role] if role else []))
        assert out.returncode == 0, out.stderr
    return Credentials.load(path)


async def ctl(
    creds: Credentials,
    secure: DaemonProcess,
    verb: str,
    body: dict[str, object],
    headers: dict[str, str] | None = None,
) -> dict[str, object]:
    subject = f"agentd.ctl.{verb}"
    data = json.dumps(body).encode()
    async with connected(secure, creds) as who:
        signed = sign_request(creds, subject, data) if headers is None else headers
        answer: dict[str, object] = await request_json(who.nc, subject, data, headers=signed)
        return answer


async def test_a_viewer_claiming_to_be_the_admin_is_still_the_viewer(secure: DaemonProcess) -> None:
    carol = operator(secure, "carol")
    body = {"v": 1, "operator": "local", "args": {"agent": "gamma", "replicas": 2}}
    answer = await ctl(carol, secure, "scale", body)
    assert answer["ok"] is False and answer["error"]["code"] == "forbidden"  # type: ignore[index]
    assert "operator 'carol' may not use 'scale'" in answer["error"]["message"]  # type: ignore[index]
    denied = records_where(
        secure,
        "control.command",
        lambda r: r.get("decision") == "denied" and r.get("attributes", {}).get("verb") == "scale",
    )
    assert denied and all(r["operator"] == "carol" for r in denied)


async def test_a_signature_by_another_key_is_refused(secure: DaemonProcess) -> None:
    carol = operator(secure, "carol")
    admin = admin_credentials(secure.url)
    subject, body = "agentd.ctl.scale", b'{"args": {"agent": "gamma", "replicas": 2}}'
    at = f"{time.time():.3f}"
    assert carol.nkey_seed and admin.nkey_seed
    forged_sig = sign(carol.nkey_seed, f"{subject}\n{at}\n".encode() + body)
    header = f"{public_key_of(admin.nkey_seed)} {at} {base64.b64encode(forged_sig).decode()}"
    async with connected(secure, carol) as who:
        answer = await request_json(who.nc, subject, body, headers={AUTH_HEADER: header})
    assert answer["error"]["code"] == "unauthenticated"
    assert "does not verify" in answer["error"]["message"]


@pytest.mark.parametrize(
    "tamper",
    ["unsigned", "other_verb", "other_body", "stale", "garbage"],
)
async def test_tampered_or_missing_signatures_are_refused(
    secure: DaemonProcess, tamper: str
) -> None:
    admin = admin_credentials(secure.url)
    body = b'{"args": {"agent": "gamma", "replicas": 1}}'
    headers = sign_request(admin, "agentd.ctl.scale", body)
    if tamper == "unsigned":
        headers = {}
    elif tamper == "other_verb":  # a signature for `status` replayed on `scale`
        headers = sign_request(admin, "agentd.ctl.status", body)
    elif tamper == "other_body":
        body = b'{"args": {"agent": "gamma", "replicas": 2}}'
    elif tamper == "stale":
        key, _, nonce, sig = headers[AUTH_HEADER].split(" ")
        headers = {AUTH_HEADER: f"{key} {time.time() - 3600:.3f} {nonce} {sig}"}
    else:
        headers = {AUTH_HEADER: "not a signature"}
    async with connected(secure, None) as daemon_rights:  # even the daemon's own connection
        answer = await request_json(daemon_rights.nc, "agentd.ctl.scale", body, headers=headers)
    assert answer["ok"] is False and answer["error"]["code"] == "unauthenticated", answer


async def test_a_message_is_from_whoever_holds_the_subject(secure: DaemonProcess) -> None:
    body = {"from": "beta", "to": "gamma", "id": "forged-from-1", "payload": {"hi": 1}}
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        answer = await request_json(
            alpha.nc, "agentd.out.alpha.beta", body, headers={"Agentd-Agent": "beta"}
        )
    assert answer["ok"] is True, answer
    routed = records_where(
        secure, "message.routed", lambda r: r["inputs"]["message_id"] == "forged-from-1"
    )
    assert [(r["inputs"]["from"], r["inputs"]["to"]) for r in routed] == [("alpha", "beta")]


async def test_a_heartbeat_for_another_agent_is_ignored(secure: DaemonProcess) -> None:
    forged = {"agent": "beta", "replica": "beta-0", "pid": 1, "state": "paused", "inflight": 99}
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        await alpha.nc.publish("agentd.hb.alpha", json.dumps(forged).encode())
        await alpha.nc.flush()
    deadline = time.monotonic() + 5
    while "ignoring a heartbeat on agentd.hb.alpha for replica 'beta-0'" not in secure.log():
        assert time.monotonic() < deadline, secure.log()[-3000:]
        await anyio.sleep(0.05)
    ps = json.loads(secure.agentctl("--json", "ps").stdout)
    (beta,) = [a for a in ps if a["agent"] == "beta"]
    assert [r["inflight"] for r in beta["replicas"]] == [0]
