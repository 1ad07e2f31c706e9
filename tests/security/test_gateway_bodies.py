"""A deeply nested body on the LLM gateway is a bad request, answered 400 and recorded, not an
internal error (issue 18, item 10). The caller holds only its own gateway token."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import DaemonProcess
from tests.security.support import records_where
from tests.security.test_gateway_tokens import gateway_url, llm_token

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BODIES = {
    "nested-prompt": b'{"model": "fake", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "unbalanced": b"[" * 200_000,
    "nested-messages": (
        b'{"model": "fake", "messages": ' + b'[{"a":' * 5_000 + b"1" + b"}]" * 5_000 + b"}"
    ),
}


async def test_a_deeply_nested_body_gets_a_400_and_a_record(secure: DaemonProcess) -> None:
    url = await gateway_url(secure)
    token = await llm_token(secure, "deepbody")  # its lease is short: ask at once
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as client:
        for name, body in BODIES.items():
            answer = await client.post(f"{url}/completions", content=body, headers=headers)
            assert answer.status_code == 400, (name, answer.status_code, answer.text[:300])
            message = answer.json()["error"]["message"]
            assert "deeper than the limit" in message, (name, answer.text[:300])
        # control: the gateway still serves the same token a well-formed call
        fine = await client.post(
            f"{url}/completions",
            json={"model": "fake", "prompt": "hi", "max_tokens": 1},
            headers=headers,
        )
        assert fine.status_code in {200, 403, 503}, fine.text  # served, policy, or warming
    for name, body in BODIES.items():
        size = len(body)

        def refused_call(r: dict[str, object], size: int = size) -> bool:
            attributes = r.get("attributes") or {}
            inputs = r.get("inputs") or {}
            assert isinstance(attributes, dict) and isinstance(inputs, dict)
            return (
                r.get("agent") == "deepbody"
                and attributes.get("status") == 400
                and inputs.get("bytes") == size
            )

        assert records_where(secure, "llm.call", refused_call), f"no record for {name}"
