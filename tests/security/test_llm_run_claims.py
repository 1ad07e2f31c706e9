"""The run an LLM call names is the caller's claim; who made the call is not.

Replicas' OpenAI clients send `baggage: agentd.run_id=...,agentd.conversation_id=...` so the
gateway's `llm.call` record joins the run's trace (docs/telemetry.md). Hostile code can name any
run or conversation there, and any agent in other headers. The promise: the record still says
which agent and replica made the call (from the bearer token, nothing else), so a call filed
under someone else's conversation shows up there as the intruder's, and a request without a
valid token files under nothing. The control: the same claim with a valid token is joined,
which is what the attack without a token would get if the gateway read baggage before the
token.
"""

from __future__ import annotations

import httpx
import pytest

from tests.harness import DaemonProcess
from tests.security.support import records_where
from tests.security.test_gateway_tokens import gateway_url, llm_token, served

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

CLAIM = {
    "baggage": "agentd.run_id=victim-run-1,agentd.conversation_id=victim-conv-1",
    "X-Agentd-Agent": "alpha",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


async def test_a_claimed_run_keeps_the_callers_name(secure: DaemonProcess) -> None:
    url = await gateway_url(secure)
    token = await llm_token(secure, "claimer")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await served(client, url, token)).status_code == 200
        # the attack without a token: refused, and its record joins no run
        anonymous = await client.post(
            f"{url}/completions", json={"model": "fake", "prompt": "x"}, headers=CLAIM
        )
        assert anonymous.status_code == 401
        # control: with its own token the claim is joined, under its own name
        claimed = await client.post(
            f"{url}/completions",
            json={"model": "fake", "prompt": "x", "max_tokens": 1},
            headers={**CLAIM, "Authorization": f"Bearer {token}"},
        )
        assert claimed.status_code == 200, claimed.text

    joined = records_where(secure, "llm.call", lambda r: r.get("run_id") == "victim-run-1")
    assert len(joined) == 1, joined
    [record] = joined
    assert record["conversation_id"] == "victim-conv-1"
    assert record["agent"] == "claimer" and record["source"] == "daemon"
    assert record["agent"] != "alpha"  # no header speaks for another agent
    assert record["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    refused = records_where(
        secure,
        "llm.call",
        lambda r: (
            r.get("decision") == "invalid_api_key"
            and r.get("trace_id") == "0af7651916cd43dd8448eb211c80319c"
        ),
    )
    assert refused and all("run_id" not in r and "conversation_id" not in r for r in refused)
