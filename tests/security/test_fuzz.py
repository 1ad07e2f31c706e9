"""Malformed and oversized payloads on every subject the daemon serves.

Each request/reply handler (ctl.*, api.*, out.*, tool.*, spawn.*) answers every fuzzed input
with a well-formed reply, an error unless the input happened to be valid; hb.* has no reply and
logs what it drops. The daemon stays healthy: the same replicas serve afterwards. Inputs come
from hypothesis and go over a real NATS connection (the daemon's own rights, so every subject is
reachable) driven from one event loop thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import nats
import nats.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from tests.harness import DaemonProcess, admin_credentials
from tests.security.support import records_where

pytestmark = pytest.mark.integration

REQUEST_SUBJECTS = {
    "ctl": "agentd.ctl.scale",
    "ctl-unknown": "agentd.ctl.x",
    "api-register": "agentd.api.register",
    "api-heartbeat": "agentd.api.heartbeat.fuzzed",
    "api-deregister": "agentd.api.deregister.fuzzed",
    "out": "agentd.out.alpha.beta",
    "tool": "agentd.tool.alpha.credit.score",
    "spawn": "agentd.spawn.alpha",
}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "v": st.integers(-2, 3),
        "args": json_values,
        "operator": json_values,
        "payload": json_values,
        "from": st.text(max_size=20),
        "to": st.text(max_size=20),
        "id": st.text(max_size=140),
        "agent": json_values,
        "params": json_values,
        "message_id": json_values,
        "call_id": json_values,
    },
)
payloads = (
    st.binary(max_size=512)
    | json_values.map(lambda v: json.dumps(v).encode())
    | near_valid.map(lambda v: json.dumps(v).encode())
)


class Bus:
    """A NATS connection on an event loop in a thread, for synchronous hypothesis tests."""

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nc: Client = self.run(nats.connect(url, **options))

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def request(self, subject: str, data: bytes) -> dict[str, Any]:
        reply = self.run(self.nc.request(subject, data, timeout=10))
        body: dict[str, Any] = json.loads(reply.data)
        return body

    def close(self) -> None:
        self.run(self.nc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def bus(secure: DaemonProcess) -> Iterator[Bus]:
    connection = Bus(secure.url, secure.nats_options())
    yield connection
    connection.close()


def check_reply(reply: dict[str, Any]) -> None:
    assert isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        assert isinstance(reply["error"]["code"], str) and reply["error"]["code"], reply
        assert isinstance(reply["error"]["message"], str), reply


@pytest.mark.parametrize("handler", sorted(REQUEST_SUBJECTS))
def test_fuzzed_requests_get_well_formed_replies(bus: Bus, handler: str) -> None:
    subject = REQUEST_SUBJECTS[handler]
    answers: list[bool] = []

    @FUZZ
    @given(data=payloads)
    def one(data: bytes) -> None:
        reply = bus.request(subject, data)
        check_reply(reply)
        answers.append(reply["ok"])

    one()
    if handler.startswith(("ctl", "api")):  # unsigned, or no valid token / registration
        assert not any(answers), handler
    assert answers


@pytest.mark.parametrize("handler", sorted(REQUEST_SUBJECTS))
def test_oversized_requests_get_error_replies(bus: Bus, handler: str) -> None:
    near_limit = b"x" * (1_000_000)  # under the server's 1 MB max_payload, over every parser
    reply = bus.request(REQUEST_SUBJECTS[handler], near_limit)
    assert reply["ok"] is False, reply
    message = reply["error"]["message"]
    assert reply["error"]["code"] in {"bad_request", "bad_message", "unknown_verb"}, reply
    assert "JSON" in message or "limit" in message or "unknown" in message, reply
    with pytest.raises(nats.errors.MaxPayloadError):  # the server's limit, enforced by NATS
        bus.request(REQUEST_SUBJECTS[handler], b"x" * (2 << 20))


def test_fuzzed_heartbeats_are_dropped_with_a_log_line(secure: DaemonProcess, bus: Bus) -> None:
    before = secure.log().count("ignoring a")
    sent: list[bytes] = []

    @FUZZ
    @given(data=payloads)
    def one(data: bytes) -> None:
        if b"alpha-" in data:  # could pass as alpha's own beat: not a malformed one
            return
        bus.run(bus.nc.publish("agentd.hb.alpha", data))
        sent.append(data)

    one()
    bus.run(bus.nc.flush())
    import time

    deadline = time.monotonic() + 5
    while secure.log().count("ignoring a") - before < len(sent):
        assert time.monotonic() < deadline, (len(sent), secure.log()[-2000:])
        time.sleep(0.05)


def test_the_daemon_is_healthy_after_the_fuzzing(secure: DaemonProcess, bus: Bus) -> None:
    from agentd.identity import sign_request

    admin = admin_credentials(secure.url)
    body = b'{"v": 1}'
    headers = sign_request(admin, "agentd.ctl.ps", body)
    reply = bus.run(bus.nc.request("agentd.ctl.ps", body, timeout=10, headers=headers))
    agents = {a["agent"]: a for a in json.loads(reply.data)["result"]}
    for name in ("alpha", "beta"):
        (replica,) = agents[name]["replicas"]
        assert replica["state"] == "running" and replica["restarts"] == 0, agents[name]
    out = secure.agentctl("send", "alpha", '{"still": "here"}', "--wait")
    assert out.returncode == 0 and json.loads(out.stdout) == {"still": "here"}, out.stderr
    failed = records_where(
        secure, "agent.failed", lambda r: r.get("agent") in {"alpha", "beta"}, timeout_s=0
    )
    assert failed == []


# --- hostile payloads from each identity, on every subject it may publish to (issue 18, item 2)
#
# The cases above use the daemon's own rights. These connect as an agent (alpha's replica
# credentials), a registered external agent, the bootstrap user and an operator, and send what
# hostile code would: nesting far past any parser's recursion (100 KB of `[`, the finding that
# stopped the daemon through the spawner), valid JSON nested too deep, ~1 MB bodies, and bytes
# that are not JSON at all. Every request must be answered as a bad request (never `internal`,
# never silence), and the daemon must still serve afterwards.

HOSTILE = settings(FUZZ, max_examples=12)
deep = st.one_of(
    st.integers(65, 300_000).map(lambda n: b"[" * n),  # unbalanced, as in the finding
    st.integers(65, 20_000).map(lambda n: b"[" * n + b"]" * n),  # valid JSON, too deep
    st.integers(65, 20_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.integers(65, 2_000).map(lambda n: b'{"args": ' + b"[" * n + b"]" * n + b"}"),
)
huge = st.integers(200_000, 999_000).map(lambda n: b"[" + b"1," * (n // 2 - 1) + b"1]")
garbage = st.binary(min_size=1, max_size=4096).filter(
    lambda b: bool(b.strip()) and not b.strip().startswith(b"{")
)
hostile = st.one_of(deep, huge, garbage)
NIL_REPLY_SUBJECTS = {"agentd.hb.alpha", "agentd.hb.fuzzext"}  # heartbeats: no reply expected
JETSTREAM_SUBJECTS = {"agentd.trace.alpha", "agentd.trace.fuzzext"}
OPERATOR_VERBS = (
    "status", "ps", "scale", "send", "dlq.list", "dlq.replay", "policy.test", "policy.reload",
    "audit.prove", "runs", "agents.issue", "agents.revoke", "operators.add", "stop", "approve",
)  # fmt: skip


def agent_subjects(name: str) -> list[str]:
    return [
        f"agentd.out.{name}.beta",
        f"agentd.tool.{name}.credit.score",
        f"agentd.spawn.{name}",
        f"agentd.hb.{name}",
        f"agentd.trace.{name}",
        f"agentd.dead.{name}",  # dead letters: the daemon writes them, on request
    ]


@pytest.fixture
def external_creds(secure: DaemonProcess) -> Iterator[Any]:
    """A registered external agent (pre-authorized `fuzzext`) with its own credentials, whose
    lease a heartbeat keeps (it is LEASE_S short) while the test runs."""
    from pathlib import Path

    from agentd.bus import Credentials

    out = secure.agentctl("--json", "agents", "issue", "fuzzext")
    assert out.returncode == 0, out.stderr
    creds = Credentials.load(Path(json.loads(out.stdout)["creds"]))
    keeper = Bus(secure.url, creds.connect_options())
    body = json.dumps({"v": 1, "args": {"spec": {"version": "1"}}}).encode()
    assert keeper.request("agentd.api.register.fuzzext", body)["ok"] is True

    async def keep_the_lease() -> None:
        while True:
            await keeper.nc.request("agentd.api.heartbeat.fuzzext", b'{"v": 1}', timeout=5)
            await asyncio.sleep(0.3)

    beating = asyncio.run_coroutine_threadsafe(keep_the_lease(), keeper.loop)
    try:
        yield creds
    finally:
        beating.cancel()
        keeper.run(keeper.nc.request("agentd.api.deregister.fuzzext", b"{}", timeout=5))
        keeper.close()


def identities(secure: DaemonProcess, external: Any) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """Who attacks (connect options) and the subjects each may publish to."""
    from agentd.bus import Credentials
    from agentd.identity import bootstrap_credentials
    from tests.security.support import agent_creds

    alpha = Credentials.load(agent_creds(secure, "alpha"))
    token = (secure.state_dir / "credentials" / "bootstrap.token").read_text().strip()
    operator = admin_credentials(secure.url)
    return {
        "agent": (alpha.connect_options(), agent_subjects("alpha")),
        "external": (
            external.connect_options(),
            [
                *agent_subjects("fuzzext"),
                "agentd.api.register.fuzzext",
                "agentd.api.heartbeat.fuzzext",
                "agentd.api.deregister.fuzzext",
            ],
        ),
        "bootstrap": (bootstrap_credentials(token).connect_options(), ["agentd.api.register"]),
        "operator": (operator.connect_options(), [f"agentd.ctl.{v}" for v in OPERATOR_VERBS]),
    }


@pytest.mark.parametrize("who", ["agent", "external", "bootstrap", "operator"])
def test_hostile_payloads_from_each_identity_are_refused_and_the_daemon_serves(
    secure: DaemonProcess, external_creds: Any, who: str
) -> None:
    from tests.security.support import rss_mb

    options, subjects = identities(secure, external_creds)[who]
    operator = admin_credentials(secure.url)
    attacker = Bus(secure.url, options)
    before = rss_mb(secure.pid)
    sent: dict[str, int] = {}
    try:
        for subject in subjects:
            fuzz_one_subject(attacker, subject, operator if who == "operator" else None, sent)
            assert secure.proc.poll() is None, f"the daemon died on {subject}:\n{secure.log()}"
        attacker.run(attacker.nc.flush())
    finally:
        attacker.close()
    assert_still_serves(secure)
    print(
        f"\nfuzz[{who}]: {sum(sent.values())} hostile payloads on {len(subjects)} subjects; "
        f"daemon RSS {before:.0f} -> {rss_mb(secure.pid):.0f} MiB"
    )


def fuzz_one_subject(attacker: Bus, subject: str, signer: Any, sent: dict[str, int]) -> None:
    """Hostile payloads on `subject`; each request answered as a bad request, not `internal`."""
    from agentd.identity import sign_request

    @HOSTILE
    @given(data=hostile)
    def one(data: bytes) -> None:
        sent[subject] = sent.get(subject, 0) + 1
        if subject in NIL_REPLY_SUBJECTS:
            attacker.run(attacker.nc.publish(subject, data))
            return
        headers = sign_request(signer, subject, data) if signer is not None else None
        reply = attacker.run(attacker.nc.request(subject, data, timeout=10, headers=headers))
        if subject in JETSTREAM_SUBJECTS:  # the stream's ack; the ingest reads it later
            return
        body = json.loads(reply.data)
        check_reply(body)
        assert body["ok"] is False, (subject, body)
        assert body["error"]["code"] != "internal", (subject, body)

    one()


def test_one_nested_message_on_its_own_spawn_subject_does_not_stop_the_daemon(
    secure: DaemonProcess,
) -> None:
    """The finding itself: 100 KB of `[` on alpha's own spawn subject, with alpha's credentials."""
    from agentd.bus import Credentials
    from tests.security.support import agent_creds

    alpha = Bus(secure.url, Credentials.load(agent_creds(secure, "alpha")).connect_options())
    try:
        finding = alpha.request("agentd.spawn.alpha", b"[" * 100_000)
        under_the_size_limit = alpha.request("agentd.spawn.alpha", b"[" * 60_000)
    finally:
        alpha.close()
    assert finding["ok"] is False and finding["error"]["code"] == "bad_request", finding
    assert "the limit is 65536 bytes" in finding["error"]["message"], finding
    assert under_the_size_limit["error"]["code"] == "bad_request", under_the_size_limit
    message = under_the_size_limit["error"]["message"]
    assert "deeper than the limit of 64" in message, under_the_size_limit
    assert_still_serves(secure)


def assert_still_serves(secure: DaemonProcess) -> None:
    """The daemon answers ps and runs a send/ask round trip."""
    assert secure.proc.poll() is None, secure.log()[-3000:]
    ps = secure.agentctl("--json", "ps")
    assert ps.returncode == 0, ps.stderr
    assert {"alpha", "beta"} <= {row["agent"] for row in json.loads(ps.stdout)}
    out = secure.agentctl("send", "beta", '{"after": "fuzz"}', "--wait")
    assert out.returncode == 0 and json.loads(out.stdout) == {"after": "fuzz"}, out.stderr
