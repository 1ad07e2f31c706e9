"""LLM-gateway tokens: a token speaks for the agent it was issued to, and only policy decides which
model pools that agent may use. Nothing in the request (a body field, a header) changes who is
calling; a revoked agent's token is refused at once."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest

from agentd.api import call_api
from tests.harness import DaemonProcess, admin_credentials
from tests.security.support import connected, records_where
from tests.security.test_revocation import register

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def gateway_url(secure: DaemonProcess) -> str:
    from agentd.cli._client import ControlClient

    async with ControlClient(secure.url, credentials=admin_credentials(secure.url)) as ctl:
        status = await ctl.call("status")
    url = status["llm_url"]  # the OpenAI base URL: http://127.0.0.1:PORT/v1
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:"), status
    return url


async def llm_token(secure: DaemonProcess, name: str) -> str:
    """Register `name` and read its gateway token from a heartbeat (never from the shared
    bootstrap inbox)."""
    creds, _ = await register(secure, name)
    async with connected(secure, creds) as agent:
        beat = await call_api(agent.nc, "heartbeat", name)
    token = beat["llm_token"]
    assert isinstance(token, str) and len(token) > 20
    return token


async def complete(client: httpx.AsyncClient, url: str, token: str, **extra: Any) -> httpx.Response:
    return await client.post(
        f"{url}/completions",
        json={"model": "fake", "prompt": "hello", "max_tokens": 1, **extra.pop("body", {})},
        headers={"Authorization": f"Bearer {token}", **extra.pop("headers", {})},
    )


async def served(client: httpx.AsyncClient, url: str, token: str) -> httpx.Response:
    """The first answer that is not 503 (the pool's replica may still be starting)."""
    with anyio.fail_after(30):
        for _ in range(150):
            answer = await complete(client, url, token)
            if answer.status_code != 503:
                return answer
            await anyio.sleep(0.2)
    raise AssertionError(f"the fake pool never served: {answer.text}")


async def test_a_token_speaks_for_its_agent_and_policy_decides_the_pool(
    secure: DaemonProcess,
) -> None:
    url = await gateway_url(secure)
    allowed, denied = await llm_token(secure, "modeler"), await llm_token(secure, "nomodel")
    async with httpx.AsyncClient(timeout=10) as client:
        # modeler may infer on the fake pool
        ok = await served(client, url, allowed)
        assert ok.status_code == 200, ok.text
        # nomodel may not, and cannot pass as modeler by saying so in the body or a header
        refused = await complete(
            client,
            url,
            denied,
            body={"user": "modeler"},
            headers={"X-Agentd-Agent": "modeler", "X-Forwarded-User": "modeler"},
        )
        assert refused.status_code == 403, refused.text
        assert "policy" in refused.text or "denied" in refused.text
        # a token nobody issued, and a missing one, are refused before anything else
        forged = await complete(client, url, allowed[:-4] + "AAAA")
        assert forged.status_code == 401
        missing = await client.post(f"{url}/completions", json={"model": "fake"})
        assert missing.status_code == 401
    calls = records_where(secure, "llm.call", lambda r: r.get("agent") in ("modeler", "nomodel"))
    by_agent = {(r["agent"], r["decision"]) for r in calls}
    assert ("modeler", "ok") in by_agent
    assert any(agent == "nomodel" and decision != "ok" for agent, decision in by_agent)
    assert not any(r["agent"] == "modeler" and r["decision"] != "ok" for r in calls)


async def test_a_revoked_agents_token_is_refused_at_once(secure: DaemonProcess) -> None:
    from agentd.cli._client import ControlClient

    url = await gateway_url(secure)
    token = await llm_token(secure, "modeler2")
    async with httpx.AsyncClient(timeout=10) as client:
        ok = await served(client, url, token)
        assert ok.status_code == 200, ok.text
        async with ControlClient(secure.url, credentials=admin_credentials(secure.url)) as ctl:
            started = time.monotonic()
            await ctl.call("agents.revoke", {"agent": "modeler2"})
        after = await complete(client, url, token)
        assert time.monotonic() - started < 1.0
        assert after.status_code == 401, after.text
