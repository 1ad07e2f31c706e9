"""LLM budgets hold against an agent that shapes its calls: with only its own gateway token, an
agent cannot make the model generate more than its budget through prompt lists, n or best_of,
and limits.toml's model limits (the budgets) are enforced; with its own NATS credentials it
cannot reset its bucket in the daemon's KV store, and concurrent calls cannot outrun it. The
fake pool runs every sequence to max_tokens, so the tokens the records count are what a real
model could have been made to generate.

Issue 18, item 6: two /v1/completions calls with 200 prompts each generated 200,000 tokens
against a 2,000-token budget (the gateway reserved n x max_tokens, not the prompts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import nats
import pytest

from agentd.api import call_api
from agentd.gateway._budgets import bucket_key
from tests.harness import DaemonProcess, decision_records
from tests.security.support import connected
from tests.security.test_gateway_tokens import gateway_url, llm_token, served
from tests.security.test_revocation import register

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

BUDGET = 2000  # conftest: limits.toml, agent "ext:hog", model "fake"
PROMPTS = [f"write story {i}" for i in range(200)]


def attack(prompts: int = 200, **extra: Any) -> dict[str, Any]:
    return {"model": "fake", "prompt": PROMPTS[:prompts], "max_tokens": 500, **extra}


def generated(daemon: DaemonProcess, agent: str, count: int) -> list[dict[str, Any]]:
    """`agent`'s llm.call records, once there are `count` of them (the recorder batches)."""
    deadline = time.monotonic() + 5
    while True:
        records = [
            r for r in decision_records(daemon.state_dir, "llm.call") if r.get("agent") == agent
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def tokens_out(records: list[dict[str, Any]]) -> int:
    return sum(r["attributes"].get("tokens_out") or 0 for r in records)


async def test_prompt_lists_n_and_best_of_cannot_spend_past_the_budget(
    secure: DaemonProcess,
) -> None:
    url = await gateway_url(secure)
    token = await llm_token(secure, "hog")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await served(client, url, token)).status_code == 200
        answers = {
            # the attack, twice: over the per-call cap, refused before any budget
            "200 prompts": await client.post(f"{url}/completions", json=attack(), headers=headers),
            "200 prompts again": await client.post(
                f"{url}/completions", json=attack(), headers=headers
            ),
            # under the cap, over the budget, each multiplier alone
            "60 prompts": await client.post(f"{url}/completions", json=attack(60), headers=headers),
            "60 token-id prompts": await client.post(
                f"{url}/completions",
                json={**attack(), "prompt": [[17, i] for i in range(60)]},
                headers=headers,
            ),
            "n=60": await client.post(f"{url}/completions", json=attack(1, n=60), headers=headers),
            "best_of=60": await client.post(
                f"{url}/completions", json=attack(1, best_of=60), headers=headers
            ),
        }
        within = await client.post(
            f"{url}/completions",
            json={"model": "fake", "prompt": ["a", "b"], "max_tokens": 100},
            headers=headers,
        )
    for what, answer in answers.items():
        assert answer.status_code in (400, 429), (what, answer.text)
    assert answers["200 prompts"].json()["error"]["param"] == "prompt"
    assert answers["60 prompts"].json()["error"]["code"] == "exceeds_limit"  # never fits
    assert within.status_code == 200, within.text
    records = generated(secure, "hog", 8)
    assert len(records) == 8
    assert tokens_out(records) == 1 + 200 <= BUDGET  # the first small call, then 2 x 100
    assert sorted(r["decision"] for r in records).count("ok") == 2


async def test_control_without_a_budget_the_same_call_generates_past_it(
    secure: DaemonProcess,
) -> None:
    url = await gateway_url(secure)
    token = await llm_token(secure, "hogfree")
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await served(client, url, token)).status_code == 200
        answer = await client.post(
            f"{url}/completions", json=attack(60), headers={"Authorization": f"Bearer {token}"}
        )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["choices"]) == 60
    records = generated(secure, "hogfree", 2)
    assert tokens_out(records) == 1 + 60 * 500 > BUDGET


async def test_a_limits_toml_model_limit_is_enforced(secure: DaemonProcess) -> None:
    url = await gateway_url(secure)
    token = await llm_token(secure, "limited")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"model": "fake", "prompt": ["a", "b"], "max_tokens": 300}
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await served(client, url, token)).status_code == 200
        first = await client.post(f"{url}/completions", json=body, headers=headers)
        second = await client.post(f"{url}/completions", json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert second.status_code == 429, second.text
    assert second.json()["error"]["code"] == "rate_limited"
    assert int(second.headers["Retry-After"]) >= 100  # ~400 tokens short at 1 token a second
    records = generated(secure, "limited", 3)
    limited = [r for r in records if r["decision"] == "rate_limited"]
    assert len(limited) == 1 and limited[0]["rule"].startswith("limits.toml:")
    assert limited[0]["attributes"]["retry_after_s"] > 100


# what a full bucket looks like in the daemon's KV store (agentd/gateway/_kv_budgets.py)
FULL = json.dumps({"tokens": 1000.0, "stamp": 4e9, "rate": 1 / 60, "burst": 1000.0}).encode()
RESETTER_KEY = bucket_key("ext:resetter", "fake")  # a registered agent is ext:<name>


async def resetter_call(
    client: httpx.AsyncClient, url: str, token: str, max_tokens: int
) -> httpx.Response:
    return await client.post(
        f"{url}/completions",
        json={"model": "fake", "prompt": "a", "max_tokens": max_tokens},
        headers={"Authorization": f"Bearer {token}"},
    )


async def test_a_hostile_replica_cannot_reset_or_outrun_its_budget(secure: DaemonProcess) -> None:
    """resetter (1,000 tokens, refilled at one a minute) spends most of its budget, then, with
    its own NATS credentials, writes a full bucket over its key, purges and deletes it,
    purges and deletes the bucket's stream; then fires 12 calls at once that each fit alone.
    The budget holds: the writes reach nothing, and the concurrent calls take no more than
    what was left. The control writes the same full bucket with the daemon's own rights: then
    it works."""
    url = await gateway_url(secure)
    creds, _ = await register(secure, "resetter")
    async with connected(secure, creds) as me:
        token = (await call_api(me.nc, "heartbeat", "resetter"))["llm_token"]
        async with httpx.AsyncClient(timeout=30) as client:
            assert (await served(client, url, token)).status_code == 200
            assert (await resetter_call(client, url, token, 600)).status_code == 200
            # ~397 left. Reset it: KV writes and the JetStream API, as the replica can
            bucket, stream = "agentd_budgets", "KV_agentd_budgets"
            attempts = [
                (f"$KV.{bucket}.{RESETTER_KEY}", FULL, None),
                (f"$KV.{bucket}.{RESETTER_KEY}", b"", {"KV-Operation": "PURGE"}),
                (f"$KV.{bucket}.{RESETTER_KEY}", b"", {"KV-Operation": "DEL"}),
                (f"$JS.API.STREAM.PURGE.{stream}", b"", None),
                (f"$JS.API.STREAM.DELETE.{stream}", b"", None),
                (f"$JS.API.STREAM.MSG.DELETE.{stream}", b'{"seq": 1}', None),
            ]
            for subject, body, headers in attempts:
                with contextlib.suppress(Exception):  # no responders / a timeout: refused
                    await me.nc.request(subject, body, headers=headers, timeout=0.2)
            # the lease is 2 s (conftest): a heartbeat renews it, and says the token
            token = (await call_api(me.nc, "heartbeat", "resetter"))["llm_token"]
            after_reset = await resetter_call(client, url, token, 500)
            # 12 calls of 150 at once: at most two fit in ~397
            burst = await asyncio.gather(
                *(resetter_call(client, url, token, 150) for _ in range(12))
            )
            # control: the same full bucket, written with rights on the daemon's JetStream
            # account, is a reset (so the refusals above are the accounts' doing)
            await daemon_put(secure, RESETTER_KEY, FULL)
            token = (await call_api(me.nc, "heartbeat", "resetter"))["llm_token"]
            reset = await resetter_call(client, url, token, 500)
    assert after_reset.status_code == 429, after_reset.text  # the reset reached nothing
    assert after_reset.json()["error"]["code"] == "rate_limited"
    assert sorted(r.status_code for r in burst) == [200] * 2 + [429] * 10
    assert reset.status_code == 200, reset.text  # a writable bucket would have been a reset
    records = generated(secure, "resetter", 18)
    before_control = [r for r in records if r["attributes"].get("max_tokens") != 500]
    assert tokens_out(before_control) <= 1000  # never past the burst, whatever it tried


async def daemon_put(daemon: DaemonProcess, key: str, value: bytes) -> None:
    nc = await nats.connect(daemon.url, **daemon.nats_options())
    try:
        kv = await nc.jetstream().key_value("agentd_budgets")
        await kv.put(key, value)
    finally:
        await nc.close()
