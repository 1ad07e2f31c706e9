"""The control plane and the echo path against one real daemon shared by this module."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from agentd.cli._client import ControlClient
from agentd.errors import ControlError
from agentd.identity import sign_request
from tests.harness import (
    DaemonProcess,
    admin_credentials,
    free_port,
    running_daemon,
    write_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with running_daemon(write_config(tmp_path_factory.mktemp("daemon"))) as d:
        yield d
        assert d.stop() == 0


def test_echo_round_trip_through_router_inbox_and_worker(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("send", "echo", '{"text": "hi"}', "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"text": "hi"}


def test_send_without_wait_returns_the_message_id(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("--json", "send", "echo", '{"n": 1}')
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["to"] == "echo" and len(result["message_id"]) == 32


def test_send_to_an_unknown_agent_is_an_error_naming_the_agents(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("send", "nobody", "{}")
    assert out.returncode == 1
    assert "no agent named 'nobody'" in out.stderr and "unknown_recipient" in out.stderr


def test_send_with_a_payload_that_is_not_json(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("send", "echo", "{not json")
    assert out.returncode == 1
    assert "the payload is not valid JSON" in out.stderr


def test_ps_shows_the_echo_replica(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("--json", "ps")
    assert out.returncode == 0
    (echo,) = [a for a in json.loads(out.stdout) if a["agent"] == "echo"]
    assert len(echo["version"]) == 16
    (replica,) = echo["replicas"]
    assert replica["state"] == "running" and replica["pid"] > 0, daemon.log()
    table = daemon.agentctl("ps")
    assert "echo-0" in table.stdout and "VERSION" in table.stdout


async def test_malformed_requests_get_error_replies_and_the_daemon_stays_healthy(
    daemon: DaemonProcess,
) -> None:
    nc = await nats.connect(daemon.url, **daemon.nats_options())
    admin = admin_credentials(daemon.url)
    try:
        cases = {
            b"{not json": "request is not valid JSON",
            b"[1, 2]": "request must be a JSON object",
            b'{"v": 1, "args": 5}': "args: Input should be a valid dictionary",
            b'{"v": 99}': "protocol version 99 is not supported",
            b'{"v": 1, "bogus": true}': "bogus: Extra inputs are not permitted",
            b"\xff\xfe": "request is not valid JSON",
        }
        for data, expected in cases.items():
            reply = json.loads((await nc.request("agentd.ctl.status", data, timeout=5)).data)
            assert reply["ok"] is False, data
            assert reply["error"]["code"] in {"bad_request", "unsupported_version"}
            assert expected in reply["error"]["message"], (data, reply)
        unknown = json.loads((await nc.request("agentd.ctl.frobnicate", b"{}", timeout=5)).data)
        assert unknown["ok"] is False and unknown["error"]["code"] == "unknown_verb"
        assert {"status", "ps", "send"} <= set(unknown["error"]["verbs"])
        body = b'{"args": {"to": 3}}'
        signed = sign_request(admin, "agentd.ctl.send", body)
        bad_send = json.loads(
            (await nc.request("agentd.ctl.send", body, timeout=5, headers=signed)).data
        )
        assert bad_send["error"]["code"] == "bad_request"
    finally:
        await nc.close()
    async with ControlClient(daemon.url, credentials=admin) as ctl:
        assert (await ctl.call("status"))["pid"] == daemon.pid
        with pytest.raises(ControlError) as err:
            await ctl.call("nope")
        assert err.value.code == "unknown_verb"


def test_agentctl_against_a_stopped_daemon_fails_fast_and_clearly(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentctl", "--url", url, "status"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert out.returncode == 1
    assert f"cannot reach agentd: cannot reach NATS at {url}: Connection refused" in out.stderr
    assert "agentd run" in out.stderr
