"""Names: a pre-authorized name is its key's alone (issue 18, item 7), and the words agentd and
agentctl use in subjects and identities are no agent's to take (item 10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from pydantic import ValidationError

from agentd.api import call_api, register_with_token
from agentd.bus import Credentials, Subjects
from agentd.config import AgentSpec
from agentd.errors import ControlError
from agentd.identity import IdentityBook
from tests.harness import DaemonProcess
from tests.security.support import connected
from tests.security.test_revocation import SPEC, bootstrap_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_the_bootstrap_token_cannot_take_a_pre_authorized_name(
    secure: DaemonProcess,
) -> None:
    out = secure.agentctl("--json", "agents", "issue", "hijacked")
    assert out.returncode == 0, out.stderr
    issued = Credentials.load(Path(json.loads(out.stdout)["creds"]))
    # the attack: whoever holds the bootstrap token claims the issued name with a key of its own
    with pytest.raises(ControlError) as err:
        await register_with_token(
            secure.url, token=bootstrap_token(secure), name="hijacked", spec=SPEC
        )
    assert err.value.code == "name_taken", err.value
    assert "pre-authorized" in str(err.value) and "only that key" in str(err.value)
    # control: the issued key still registers, as it should
    async with connected(secure, issued) as agent:
        registered = await call_api(agent.nc, "register", "hijacked", {"spec": SPEC})
        assert registered["agent"] == "hijacked"
        # and, registered, the name is still protected from the bootstrap path
        with pytest.raises(ControlError) as again:
            await register_with_token(
                secure.url, token=bootstrap_token(secure), name="hijacked", spec=SPEC
            )
        assert again.value.code == "name_taken"
        await call_api(agent.nc, "deregister", "hijacked")


async def test_an_agent_named_ctl_reads_no_operator_replies(secure: DaemonProcess) -> None:
    """The attack end to end: register as `ctl`, listen where agentctl's `send --wait` replies
    go. Refused at registration; nothing heard."""
    heard: list[bytes] = []
    try:
        creds, _ = await register_with_token(
            secure.url, token=bootstrap_token(secure), name="ctl", spec=SPEC
        )
    except ControlError as exc:
        assert exc.code == "reserved_name"
        return
    async with connected(secure, creds) as ctl:  # reached only where names are not reserved

        async def on_reply(msg: Msg) -> None:
            heard.append(msg.data)

        await ctl.nc.subscribe("agentd.reply.ctl.>", cb=on_reply)
        await ctl.nc.flush()
        out = secure.agentctl("send", "beta", '{"secret": 1}', "--wait")
        assert out.returncode == 0, out.stderr
        await ctl.nc.flush()
    raise AssertionError(f"an agent named ctl registered and heard {heard}")


@pytest.mark.parametrize("name", ["ctl", "daemon"])
async def test_a_reserved_name_cannot_register(secure: DaemonProcess, name: str) -> None:
    """policy.csv lets ext:ctl and ext:daemon register (conftest): the name itself is refused.
    An agent named `ctl` could subscribe to agentd.reply.ctl.>: agentctl's replies."""
    with pytest.raises(ControlError) as err:
        await register_with_token(secure.url, token=bootstrap_token(secure), name=name, spec=SPEC)
    assert err.value.code == "reserved_name", err.value
    assert f"{name!r} is reserved" in str(err.value)


def test_a_reserved_name_cannot_be_issued(secure: DaemonProcess) -> None:
    out = secure.agentctl("agents", "issue", "operator")
    assert out.returncode != 0
    assert "'operator' is reserved" in out.stderr, out.stderr


def test_reserved_names_refused_for_configured_agents_and_in_the_book(tmp_path: Path) -> None:
    from agentd.config import RESERVED_NAMES

    assert {"ctl", "daemon", "local", "operator", "bootstrap", "probe", "api", "evt"} <= set(
        RESERVED_NAMES
    )
    for name in sorted(RESERVED_NAMES):
        with pytest.raises(ValidationError, match="is reserved"):
            AgentSpec(name=name, graph="graph:graph")
    book = IdentityBook(tmp_path, Subjects(), Path("bootstrap.token"))
    with pytest.raises(ControlError) as err:
        book.issue_external("ctl")
    assert err.value.code == "reserved_name"
    # control: an ordinary name is fine, and operators may still be called `local`
    AgentSpec(name="ctl-helper", graph="graph:graph")
    book.issue_external("partner")
    book.issue_operator("local", "admin")
