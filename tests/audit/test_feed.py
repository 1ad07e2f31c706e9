"""The live feed's summaries: no payloads, secrets redacted on both the fast and the slow path."""

from __future__ import annotations

import json
from typing import Any

from nats.aio.client import Client

from agentd.bus import Subjects
from agentd.daemon._decision_feed import DecisionFeed
from agentd.trace import REDACTED, DecisionRecord, Redactor, WireRecord, parse_published

SECRET = "sk-" + "Z" * 24


def summary(redactor: Redactor, **fields: Any) -> dict[str, Any]:
    feed = DecisionFeed(Client(), Subjects("agentd"), redactor)
    parsed: dict[str, Any] = json.loads(feed.summary(DecisionRecord(**fields)))
    return parsed


def test_payloads_are_left_out_and_the_rest_kept() -> None:
    got = summary(
        Redactor(),
        kind="tool.executed",
        agent="a",
        run_id="r1",
        inputs={"args": 1},
        outputs={"result": 2},
        attributes={"tool": "credit.score"},
        lineage={"policy_version": "p1"},
    )
    assert "inputs" not in got and "outputs" not in got
    assert got["attributes"] == {"tool": "credit.score"} and got["lineage"] == {
        "policy_version": "p1"
    }
    assert (got["kind"], got["agent"], got["run_id"]) == ("tool.executed", "a", "r1")


def test_secrets_are_redacted_in_fields_attributes_and_behind_escapes() -> None:
    redactor = Redactor([r"sk-[A-Za-z0-9]{20,}"])
    got = summary(
        redactor,
        kind="message.routed",
        conversation_id=f"c-{SECRET}",
        reason=f'quoted "{SECRET}"',
        attributes={"header": f"Bearer {SECRET}"},
    )
    text = json.dumps(got)
    assert SECRET not in text
    assert got["conversation_id"] == f"c-{REDACTED}"
    assert got["attributes"]["header"] == f"Bearer {REDACTED}"


def test_an_anchored_pattern_takes_the_slow_path() -> None:
    redactor = Redactor([r"^secret-\d+$"])
    got = summary(redactor, kind="message.routed", conversation_id="secret-42", agent="a")
    assert got["conversation_id"] == REDACTED and got["agent"] == "a"


def test_huge_attributes_are_dropped_from_the_summary() -> None:
    got = summary(
        Redactor(max_inline_bytes=256), kind="llm.call", agent="a", attributes={"big": "x" * 1000}
    )
    assert "attributes" not in got and got["agent"] == "a"


def test_a_replicas_record_is_summarized_from_its_text_and_redacted_the_same() -> None:
    """Records the ingest took from a replica reach the feed as the text the replica published
    (`WireRecord`): the same summary, payloads left out, the ingest's source, secrets removed."""
    redactor = Redactor([r"sk-[A-Za-z0-9]{20,}"])
    feed = DecisionFeed(Client(), Subjects("agentd"), redactor)
    body = DecisionRecord(
        kind="run.failed",
        agent="intake",
        run_id="r9",
        decision="error",
        reason=f"upstream said: key {SECRET} refused",
        inputs={"message_id": "m1"},
        attributes={"duration_s": 0.5},
    ).body_json()
    record = parse_published("intake", body.encode())
    assert isinstance(record, WireRecord)
    got = json.loads(feed.summary(record))
    assert SECRET not in json.dumps(got) and REDACTED in got["reason"]
    assert "inputs" not in got and got["attributes"] == {"duration_s": 0.5}
    assert (got["kind"], got["agent"], got["source"]) == ("run.failed", "intake", "agent:intake")
