"""One policy subject for a registered external agent: `ext:<name>` at registration, at the LLM
gateway (tests/security/test_gateway_tokens.py), at the tool gateway (the MCP endpoint's tests,
whose grants name `ext:partner`) and at the router, here. A grant written for the bare name is a
replica's and does nothing for the outside agent of that name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentd.api import call_api
from agentd.bus import Message, Subjects, new_id
from tests.harness import DaemonProcess
from tests.security.support import connected
from tests.security.test_revocation import register

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def send_as(secure: DaemonProcess, name: str, to: str) -> dict[str, Any]:
    """Register `name` and send one message to `to` through the router, as its own code would."""
    creds, _ = await register(secure, name)
    async with connected(secure, creds) as agent:
        message = Message.model_validate(
            {"from": name, "to": to, "conversation_id": new_id(), "payload": {"hi": 1}}
        )
        reply = await agent.nc.request(
            Subjects("agentd").out(name, to), message.to_json(), timeout=10
        )
        await call_api(agent.nc, "deregister", name)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def test_a_registered_agents_messages_are_decided_on_ext_name(
    secure: DaemonProcess,
) -> None:
    # `p, ext:courier, agent:beta, send, allow`: the outside agent's own grant lets it through
    allowed = await send_as(secure, "courier", "beta")
    assert allowed["ok"] is True, allowed
    # `p, courier2, agent:beta, send, allow` names a replica `courier2`, not the outside agent
    refused = await send_as(secure, "courier2", "beta")
    assert refused["ok"] is False and refused["error"]["code"] == "policy_denied", refused
