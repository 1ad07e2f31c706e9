"""Replica A's credentials against B: NATS itself refuses every step outside A's own subjects.

Each refusal is the server's permissions violation for that exact subject, and a positive
control shows the same connection can do what A is meant to do.
"""

from __future__ import annotations

import anyio
import pytest

from agentd.bus import Credentials
from agentd.identity import public_key_of
from tests.harness import DaemonProcess
from tests.security.support import agent_creds, connected, request_json

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

INBOX = "AGENTD_INBOX"

# publishing as another agent, reading its inbox, calling its tools
AS_ANOTHER_AGENT = [
    "agentd.out.beta.alpha",  # a message from beta
    "agentd.tool.beta.credit.score",  # beta's tool
    "agentd.trace.beta",  # beta's decision records
    "agentd.hb.beta",  # beta's heartbeat
    "agentd.spawn.beta",  # spawn on beta's quota
    "agentd.dlq.beta",  # dead letters in beta's name
    "agentd.dlq.alpha",  # dead letters at all: only the daemon writes them
    "agentd.dead.beta",  # ask the daemon to dead-letter beta's messages
    "agentd.in.beta",  # the inbox itself: the router's only
    f"$JS.API.CONSUMER.MSG.NEXT.{INBOX}.inbox-beta",  # pull beta's inbox
    f"$JS.ACK.{INBOX}.inbox-beta.1.1.1.1.0",  # ack beta's messages
    "$KV.agentd_runs.lease.beta.x",  # take beta's conversation lease
    "$KV.agentd_runs.run.beta.m1",  # claim one of beta's runs finished
]
# JetStream API of other streams and consumers, and of the account
OTHER_JETSTREAM = [
    f"$JS.API.CONSUMER.INFO.{INBOX}.inbox-beta",
    f"$JS.API.CONSUMER.DELETE.{INBOX}.inbox-beta",
    f"$JS.API.CONSUMER.CREATE.{INBOX}",
    f"$JS.API.CONSUMER.DURABLE.CREATE.{INBOX}.inbox-mine",
    f"$JS.API.STREAM.DELETE.{INBOX}",
    f"$JS.API.STREAM.PURGE.{INBOX}",
    f"$JS.API.STREAM.MSG.GET.{INBOX}",
    "$JS.API.STREAM.INFO.AGENTD_DLQ",
    # the run ledger's and the inbox's info: with a subjects filter, every agent's message ids,
    # conversation leases and inbox counts
    "$JS.API.STREAM.INFO.KV_agentd_runs",
    f"$JS.API.STREAM.INFO.{INBOX}",
    "$JS.API.STREAM.LIST",
    "$JS.API.INFO",
    "$JS.API.DIRECT.GET.KV_agentd_tool_results.$KV.agentd_tool_results.x",
]
# the control plane and the registration API
CONTROL = [
    "agentd.ctl.status",
    "agentd.ctl.scale",
    "agentd.ctl.agents.revoke",
    "agentd.api.register",
]
# listening in on others
SUBSCRIPTIONS = [
    "agentd.reply.beta.>",
    "agentd.ctl.>",
    "agentd.out.>",
    "agentd.cmd.beta",
    "_INBOX.>",
    "_INBOX_a_beta.>",
    ">",
]


@pytest.mark.parametrize("subject", AS_ANOTHER_AGENT + OTHER_JETSTREAM + CONTROL)
async def test_alpha_may_not_publish(secure: DaemonProcess, subject: str) -> None:
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        assert await alpha.publish_refused(subject), alpha.errors


@pytest.mark.parametrize("subject", SUBSCRIPTIONS)
async def test_alpha_may_not_listen(secure: DaemonProcess, subject: str) -> None:
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        assert await alpha.subscribe_refused(subject), alpha.errors


async def test_alpha_may_do_what_alpha_does(secure: DaemonProcess) -> None:
    """The positive control: the same credentials route a message as alpha and read alpha's
    own consumer, with no violation."""
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        answer = await request_json(alpha.nc, "agentd.out.alpha.beta", {"payload": {"x": 1}})
        assert answer["ok"] is True, answer
        # its own consumer answers a pull (an empty inbox answers with a status, not an error
        # from an account without JetStream)
        pulled = await alpha.nc.request(
            f"$JS.API.CONSUMER.MSG.NEXT.{INBOX}.inbox-alpha", b'{"batch": 1, "no_wait": true}'
        )
        assert (pulled.headers or {}).get("Status") in (None, "404", "408"), pulled.headers
        assert alpha.errors == []


async def test_no_credentials_no_connection(secure: DaemonProcess) -> None:
    """A client that offers no credentials is refused (raw protocol: no client library)."""
    port = int(secure.url.rsplit(":", 1)[1])
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        info = await stream.receive()
        assert info.startswith(b"INFO ") and b'"auth_required":true' in info
        await stream.send(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
        answer = b""
        with anyio.fail_after(5):
            while b"\r\n" not in answer:
                answer += await stream.receive()
    assert answer.startswith(b"-ERR 'Authorization Violation'"), answer


def test_credentials_are_private_files(secure: DaemonProcess) -> None:
    files = sorted((secure.state_dir / "credentials").rglob("*"))
    secrets = [f for f in files if f.is_file()]
    assert {f.name for f in secrets} >= {"alpha.creds", "local.creds", "daemon.creds"}
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in secrets), secrets
    conf = secure.state_dir / "nats-server.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    alpha = Credentials.load(secure.state_dir / "credentials" / "agents" / "alpha.creds")
    assert alpha.nkey_seed and alpha.nkey_seed.startswith("SU")
    server = conf.read_text()  # the server knows public keys only
    assert alpha.nkey_seed not in server and public_key_of(alpha.nkey_seed) in server
