"""Outside tokens (`agentctl tokens`) in the gateway and their key-value bucket: names and
durations checked, the secret never stored, the bucket shared by every host's book (a second
`TokenBucket` on the same bucket is another host, a new one after the first is a restart), and
the gateway deciding on `ext:<name>` within the token's pool scope, refusing revoked and
expired tokens with OpenAI-shaped 401s that the official SDK raises as its own class.

The same paths through a real daemon and agentctl: tests/test_tokens_daemon.py; the attacks:
tests/security/test_outside_tokens.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import nats
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from agentd.config import external_subject
from agentd.errors import ControlError
from agentd.gateway import (
    OutsideToken,
    ReplicaEndpoint,
    StaticUpstreams,
    TokenBook,
    TokenBucket,
    parse_ttl,
)
from tests.gateway.fake_openai import FakeReplica, fake_replicas
from tests.gateway.support import running_gateway
from tests.harness import nats_server

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Answer:
    allowed: bool
    rule: str
    reason: str = ""
    policy_version: str = ""


def grants(*allowed: tuple[str, str]) -> tuple[Callable[[str, str, str], Answer], list[str]]:
    """A policy allowing exactly `(subject, pool)` pairs, and the subjects it was asked about."""
    asked: list[str] = []

    def check(subject: str, obj: str, action: str) -> Answer:
        asked.append(subject)
        ok = action == "infer" and (subject, obj.removeprefix("model:")) in allowed
        return Answer(ok, "test grant" if ok else "deny by default")

    return check, asked


async def eventually(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"not within {timeout_s}s")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400.0), ("12h", 43200.0), ("90m", 5400.0), ("45s", 45.0), ("2w", 1209600.0)],
)
def test_a_ttl_is_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("30", "write a number and a unit"),
        ("30y", "write a number and a unit"),
        ("-1d", "write a number and a unit"),
        ("", "write a number and a unit"),
        ("0d", "longer than zero"),
        ("400d", "longer than a token may live"),
    ],
)
def test_a_bad_ttl_says_what_is_accepted(text: str, says: str) -> None:
    with pytest.raises(ControlError, match=says) as raised:
        parse_ttl(text)
    assert raised.value.code == "bad_request"


def test_names_are_checked_and_an_active_name_is_not_issued_twice() -> None:
    book = TokenBook()
    for bad in ("Partner", "ext:partner", "a b", "-x", "x" * 64, ""):
        with pytest.raises(ControlError, match="lowercase") as raised:
            book.new_outside(bad, ("main",), 60, "alice")
        assert raised.value.code == "bad_request"
    secret, entry = book.new_outside("partner", ("main",), 60, "alice")
    book.keep(entry)
    assert book.holder(secret) is not None
    with pytest.raises(ControlError, match="revoke it first") as raised:
        book.new_outside("partner", ("main",), 60, "bob")
    assert raised.value.code == "name_taken"
    # once revoked (or expired) the name may be issued anew; the old secret stays refused
    book.keep(replace(entry, revoked_at=entry.issued_at, revoked_by="alice"))
    fresh, renewed = book.new_outside("partner", ("main",), 60, "bob")
    book.keep(renewed)
    assert book.holder(secret) is None and book.holder(fresh) is not None


def test_a_replica_named_ext_is_not_an_outside_client() -> None:
    book = TokenBook()
    replica = book.holder(book.issue("ext", "ext-0"))
    registered = book.holder(book.issue("partner", "partner@identity", kind="registered"))
    assert replica is not None and registered is not None
    assert replica.subject == "ext" and registered.subject == "ext:partner"
    # no name with a colon becomes a subject: an outside name cannot reach into another
    with pytest.raises(ValueError, match="colon"):
        external_subject("x:partner")


@asynccontextmanager
async def bucket_on(url: str, bucket: str) -> AsyncIterator[TokenBucket]:
    """A TokenBucket (one host's) on the bucket at `url`, running."""
    nc = await nats.connect(url)
    store = TokenBucket(TokenBook())
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(store.run, nc.jetstream(), bucket)
            yield store
            await store.shutdown()
    finally:
        await nc.close()


async def test_the_bucket_keeps_digests_is_shared_and_survives_a_restart(tmp_path: Path) -> None:
    with nats_server(tmp_path / "js") as url:
        async with bucket_on(url, "t_tokens") as host_a, bucket_on(url, "t_tokens") as host_b:
            secret, entry = await host_a.issue("partner", ("main",), 3600, "alice")
            assert secret.startswith("agentd-ext-") and len(secret) > 40
            # the other host's gateway accepts it as soon as its watcher has the entry
            await eventually(lambda: host_b.book.holder(secret) is not None)
            holder = host_b.book.holder(secret)
            assert holder is not None and holder.subject == "ext:partner"
            assert holder.pools == ("main",) and holder.kind == "outside"
            # both hosts issuing one name: one wins, the other is told
            with pytest.raises(ControlError) as raised:
                await host_b.issue("partner", ("main",), 60, "bob")
            assert raised.value.code == "name_taken"
            other, _ = await host_b.issue("scorer", ("main", "tiny"), 3600, "bob")
            # a revocation through one host is refused at the other within the watcher's delivery
            await host_b.revoke("partner", "bob")
            assert host_b.book.holder(secret) is None
            await eventually(lambda: host_a.book.holder(secret) is None, timeout_s=2.0)
            with pytest.raises(ControlError) as raised:
                await host_a.revoke("partner", "alice")
            assert raised.value.code == "already_revoked"
            with pytest.raises(ControlError) as raised:
                await host_a.revoke("nobody", "alice")
            assert raised.value.code == "unknown_token" and "scorer" in str(raised.value)
        # what is stored: the digest, never the secret
        nc = await nats.connect(url)
        try:
            kv = await nc.jetstream().key_value("t_tokens")
            stored = [await kv.get(name) for name in ("partner", "scorer")]
        finally:
            await nc.close()
        for found, token in zip(stored, (secret, other), strict=True):
            assert found.value is not None and token.encode() not in found.value
            assert OutsideToken.decode(found.value).digest != token
        # a restarted daemon reads the bucket back: revoked stays revoked, active stays active
        async with bucket_on(url, "t_tokens") as restarted:
            assert restarted.book.holder(secret) is None
            assert restarted.book.holder(other) is not None
            states = {e.name: e.state() for e in restarted.book.outside_tokens()}
            assert states == {"partner": "revoked", "scorer": "active"}


def two_pools(main: FakeReplica, tiny: FakeReplica) -> StaticUpstreams:
    return StaticUpstreams(
        [
            ReplicaEndpoint("main", main.name, main.base_url, "main-served", "org/m", "r1"),
            ReplicaEndpoint("tiny", tiny.name, tiny.base_url, "tiny-served", "org/t", "r1"),
        ]
    )


async def test_the_gateway_decides_on_ext_name_within_the_scope_and_refuses_dead_tokens() -> None:
    # policy lets ext:partner use both pools, and the bare name `partner` (a replica's subject)
    # nothing: only the token's scope keeps it to main
    policy, asked = grants(("ext:partner", "main"), ("ext:partner", "tiny"))
    async with (
        fake_replicas(FakeReplica("m0"), FakeReplica("t0")) as (main, tiny),
        running_gateway(two_pools(main, tiny), policy=policy) as gw,
    ):
        secret, entry = gw.tokens.new_outside("partner", ("main",), 3600, "alice")
        gw.tokens.keep(entry)
        client = AsyncOpenAI(base_url=gw.url, api_key=secret, max_retries=0)
        expired = AsyncOpenAI(base_url=gw.url, api_key="unset", max_retries=0)
        async with client, expired:
            chat: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
            reply = await client.chat.completions.create(model="main", messages=chat, max_tokens=4)
            assert reply.choices[0].message.content == "hello from m0"
            assert set(asked) == {"ext:partner"}  # never the bare name
            # pool B with a token for pool A: 403, before policy or upstream
            with pytest.raises(openai.PermissionDeniedError) as denied:
                await client.chat.completions.create(model="tiny", messages=chat, max_tokens=4)
            assert denied.value.code == "token_scope" and tiny.received == []
            assert [m.id for m in (await client.models.list()).data] == ["main"]
            with pytest.raises(openai.NotFoundError):
                await client.models.retrieve("tiny")
            # revoked: refused at once, saying so
            gw.tokens.keep(replace(entry, revoked_at=entry.issued_at, revoked_by="bob"))
            with pytest.raises(openai.AuthenticationError) as revoked:
                await client.chat.completions.create(model="main", messages=chat, max_tokens=4)
            assert revoked.value.code == "token_revoked" and "bob" in revoked.value.message
            # expired: the same, once its time is up
            late, old = gw.tokens.new_outside("late", ("main",), 3600, "alice")
            gw.tokens.keep(replace(old, expires_at=old.issued_at - 1))
            expired.api_key = late
            with pytest.raises(openai.AuthenticationError) as lapsed:
                await expired.chat.completions.create(model="main", messages=chat, max_tokens=4)
            assert lapsed.value.code == "token_expired"
            assert len(main.received) == 1  # only the first call went upstream
            calls = gw.records.of("llm.call")
            ok, scoped = calls[0], calls[1]
            assert ok["agent"] == "partner" and ok["replica"] == "partner@token"
            assert ok["attributes"]["subject"] == "ext:partner" and ok["decision"] == "ok"
            assert scoped["decision"] == "token_scope" and scoped["rule"] == "token scope"
            assert [c["decision"] for c in calls[-2:]] == ["token_revoked", "token_expired"]


async def test_a_registered_agents_token_is_decided_on_ext_name_too() -> None:
    policy, asked = grants(("ext:scorer", "main"))
    async with (
        fake_replicas(FakeReplica("m0"), FakeReplica("t0")) as (main, tiny),
        running_gateway(two_pools(main, tiny), policy=policy) as gw,
    ):
        registered = gw.tokens.issue("scorer", "scorer@identity", kind="registered")
        replica = gw.tokens.issue("scorer2", "scorer2-0")
        chat: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
        client = AsyncOpenAI(base_url=gw.url, api_key=registered, max_retries=0)
        as_replica = AsyncOpenAI(base_url=gw.url, api_key=replica, max_retries=0)
        async with client, as_replica:
            await client.chat.completions.create(model="main", messages=chat, max_tokens=4)
            # a registered agent has no scope but policy's: tiny is denied by policy
            with pytest.raises(openai.PermissionDeniedError) as denied:
                await client.chat.completions.create(model="tiny", messages=chat, max_tokens=4)
            assert denied.value.code == "policy_denied"
            with pytest.raises(openai.PermissionDeniedError):
                await as_replica.chat.completions.create(model="main", messages=chat, max_tokens=4)
        assert asked == ["ext:scorer", "ext:scorer", "scorer2"]
