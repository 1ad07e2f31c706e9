"""Dead letters are the daemon's: a replica can neither forge one nor use one to get around the
router. A replica asks the daemon to keep one of its own inbox messages; the daemon copies it
from the inbox (sender and recipient as the router stored them), and a replay is decided again
under the policy in force."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentd.bus import Message
from tests.harness import DaemonProcess
from tests.security.support import agent_creds, connected, records_where, request_json

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


def dead_letters(daemon: DaemonProcess, agent: str) -> list[dict[str, Any]]:
    out = daemon.agentctl("--json", "dlq", "list", "--agent", agent)
    assert out.returncode == 0, out.stderr
    entries: list[dict[str, Any]] = json.loads(out.stdout)
    return entries


async def test_a_replica_cannot_write_a_dead_letter(secure: DaemonProcess) -> None:
    """The issue's attack: alpha publishes, on its own dead-letter subject, a message "from
    gamma to beta" with a forged Agentd-Agent header. The server refuses the publish."""
    forged = Message.model_validate({"from": "gamma", "to": "beta", "payload": {"pay": "me"}})
    headers = {"Agentd-Agent": "gamma", "Agentd-Error": "boom", "Agentd-Deliveries": "5"}
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        await alpha.nc.publish("agentd.dlq.alpha", forged.to_json(), headers=headers)
        assert await alpha.publish_refused("agentd.dlq.alpha", forged.to_json()), alpha.errors
    assert all(e.get("message_id") != forged.id for e in dead_letters(secure, "gamma"))
    assert all(e.get("message_id") != forged.id for e in dead_letters(secure, "alpha"))


async def test_a_replica_may_dead_letter_only_its_own_inbox(secure: DaemonProcess) -> None:
    async with connected(secure, None) as daemon:
        stray = Message.model_validate({"from": "gamma", "to": "beta", "payload": {"x": 1}})
        seq = (await daemon.nc.jetstream().publish("agentd.in.parked-beta", stray.to_json())).seq
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        answer = await request_json(alpha.nc, "agentd.dead.alpha", {"seq": seq, "error": "x"})
        assert answer["ok"] is False and answer["error"]["code"] == "forbidden", answer
        bad = await request_json(alpha.nc, "agentd.dead.alpha", {"seq": "1; DROP"})
        assert bad["ok"] is False and bad["error"]["code"] == "bad_request", bad
    assert all(e.get("message_id") != stray.id for e in dead_letters(secure, "alpha"))


async def test_the_daemon_copies_the_routed_message_not_the_replicas_word(
    secure: DaemonProcess,
) -> None:
    """alpha gives up on a message an operator sent it: the dead letter names the operator as
    sender (the router's record), alpha as the agent, and the daemon records it."""
    assert secure.agentctl("drain", "alpha").returncode == 0
    try:
        sent = secure.agentctl("--json", "send", "alpha", '{"give": "up"}')
        assert sent.returncode == 0, sent.stderr
        message_id = json.loads(sent.stdout)["message_id"]
        async with connected(secure, agent_creds(secure, "alpha")) as alpha:
            psub = await alpha.nc.jetstream().pull_subscribe_bind("inbox-alpha", "AGENTD_INBOX")
            (msg,) = await psub.fetch(1, timeout=5)
            answer = await request_json(
                alpha.nc,
                "agentd.dead.alpha",
                {"seq": msg.metadata.sequence.stream, "error": "gave up", "deliveries": 3},
            )
            assert answer["ok"] is True, answer
            await msg.term()
    finally:
        assert secure.agentctl("start", "alpha").returncode == 0
    (entry,) = [e for e in dead_letters(secure, "alpha") if e.get("message_id") == message_id]
    assert entry["sender"] == "operator:local" and entry["error"] == "gave up"
    assert entry["deliveries"] == 3
    assert records_where(
        secure,
        "message.dead_lettered",
        lambda r: r.get("agent") == "alpha" and r["inputs"]["message_id"] == message_id,
    )


async def test_a_replay_is_decided_again_under_todays_policy(secure: DaemonProcess) -> None:
    """A dead letter from gamma to beta (gamma may not send to beta) is not replayed into
    beta's inbox; one from alpha (which may) is, and both decisions are recorded."""
    refused = Message.model_validate({"from": "gamma", "to": "beta", "payload": {"r": 1}})
    allowed = Message.model_validate({"from": "alpha", "to": "beta", "payload": {"r": 2}})
    async with connected(secure, None) as daemon:
        js = daemon.nc.jetstream()
        bad_seq = (await js.publish("agentd.dlq.beta", refused.to_json())).seq
        good_seq = (await js.publish("agentd.dlq.beta", allowed.to_json())).seq
    out = secure.agentctl("dlq", "replay", str(bad_seq))
    assert out.returncode == 1 and "gamma may not send to beta" in out.stderr, out
    assert records_where(
        secure,
        "message.refused",
        lambda r: r.get("attributes", {}).get("replay_of") == bad_seq,
    )
    assert any(e["seq"] == bad_seq for e in dead_letters(secure, "beta"))  # still kept
    # the control: a sender policy allows goes through, recorded as routed
    out = secure.agentctl("--json", "dlq", "replay", str(good_seq))
    assert out.returncode == 0, out.stderr
    assert records_where(
        secure,
        "message.routed",
        lambda r: r.get("attributes", {}).get("replay_of") == good_seq,
    )
