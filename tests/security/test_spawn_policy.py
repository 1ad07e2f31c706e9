"""Spawning is decided by policy like every other action (issue 18, item 10): an agent asks on
its own `agentd.spawn.<agent>` with its own credentials; policy decides (`<agent>`,
`agent:<template>`, `spawn`) and the decision is recorded either way."""

from __future__ import annotations

import pytest

from tests.harness import DaemonProcess
from tests.security.support import agent_creds, connected, records_where, request_json

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_an_agent_without_a_spawn_rule_cannot_spawn(secure: DaemonProcess) -> None:
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        answer = await request_json(alpha.nc, "agentd.spawn.alpha", {"agent": "gamma"}, timeout=30)
    assert answer["ok"] is False, answer
    assert answer["error"]["code"] == "policy_denied", answer
    assert "alpha may not spawn gamma" in answer["error"]["message"]
    refused = records_where(
        secure,
        "agent.spawned",
        lambda r: r.get("agent") == "alpha" and r.get("decision") == "refused",
    )
    # the shared daemon also holds the fuzz tests' refused spawns: this one is among them
    assert any((r.get("inputs") or {}).get("template") == "gamma" for r in refused), refused
    ps = secure.agentctl("--json", "ps")
    assert not [r for r in __import__("json").loads(ps.stdout) if r.get("spawned_by") == "alpha"]


async def test_control_an_agent_with_a_spawn_rule_spawns(secure: DaemonProcess) -> None:
    """conftest's policy: `p, delta, agent:gamma, spawn, allow`."""
    async with connected(secure, agent_creds(secure, "delta")) as delta:
        answer = await request_json(delta.nc, "agentd.spawn.delta", {"agent": "gamma"}, timeout=60)
    assert answer["ok"] is True, answer
    name = answer["agent"]
    assert name.startswith("gamma-s"), answer
    spawned = records_where(
        secure,
        "agent.spawned",
        lambda r: r.get("agent") == name and r.get("decision") == "spawned",
    )
    assert spawned and spawned[0]["rule"].startswith("policy.csv:"), spawned
