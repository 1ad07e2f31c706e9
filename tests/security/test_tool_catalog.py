"""An agent's tool catalog (`agentd.tools.<agent>`: its tools' names, descriptions and schemas)
is its own: replica alpha's credentials cannot ask for beta's. The gateway answers whoever
reaches the subject (the control: the daemon's own connection gets beta's catalog), so NATS
accounts are the whole protection, as they are for calling beta's tools."""

from __future__ import annotations

import pytest

from tests.harness import DaemonProcess
from tests.security.support import agent_creds, connected, request_json

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_alpha_may_not_read_betas_catalog(secure: DaemonProcess) -> None:
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        assert await alpha.publish_refused("agentd.tools.beta"), alpha.errors
        assert await alpha.publish_refused("agentd.tools.*"), alpha.errors
        own = await request_json(alpha.nc, "agentd.tools.alpha", {})
        assert own["ok"] is True and isinstance(own["tools"], list), own


async def test_control_whoever_reaches_the_subject_gets_the_catalog(
    secure: DaemonProcess,
) -> None:
    async with connected(secure, None) as daemon:  # the daemon's account: every subject
        answer = await request_json(daemon.nc, "agentd.tools.beta", {})
        assert answer["ok"] is True and isinstance(answer["tools"], list), answer
