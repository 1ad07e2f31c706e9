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
