"""A replica may write only its own decisions to the log: its runs and its extension records,
dated now, stored under its own identity (issue 18, item 5).

Each attack runs with the replica's own NATS credentials (what hostile code inside replica
`alpha` holds) on its own trace subject `agentd.trace.alpha`, which its permissions allow.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest

from agentd.trace import DecisionRecord, check_wire_record
from tests.harness import DaemonProcess
from tests.security.support import agent_creds, connected, records_where

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# what the review forged: an operator's command, an approval, a policy reload, a routing
# decision naming an operator, and a lifecycle record
FORGED: list[dict[str, Any]] = [
    {"kind": "control.command", "operator": "alice", "decision": "ok", "reason": "scale"},
    {"kind": "tool.approved", "operator": "alice", "decision": "approve"},
    {"kind": "policy.reloaded", "operator": "alice", "decision": "reloaded"},
    {"kind": "message.routed", "operator": "alice", "decision": "allow"},
    {"kind": "agent.spawned", "decision": "ok"},
]


def forged_body(fields: dict[str, Any], *, ts: float | None = None) -> bytes:
    record = {"id": f"forged-{uuid.uuid4().hex}", "ts": time.time() if ts is None else ts}
    return json.dumps({**record, "agent": "alpha", **fields}).encode()


async def publish(secure: DaemonProcess, bodies: list[bytes]) -> None:
    async with connected(secure, agent_creds(secure, "alpha")) as alpha:
        js = alpha.nc.jetstream()
        for body in bodies:
            await js.publish("agentd.trace.alpha", body)


def rejected_for(secure: DaemonProcess, count: int, needle: str) -> list[dict[str, Any]]:
    def hit(record: dict[str, Any]) -> bool:
        return record.get("agent") == "alpha" and needle in (record.get("reason") or "")

    deadline = time.monotonic() + 10
    while True:
        found = records_where(secure, "trace.rejected", hit, timeout_s=1)
        if len(found) >= count or time.monotonic() > deadline:
            return found


def stored_ids(secure: DaemonProcess) -> set[str]:
    return {r["id"] for r in records_where(secure, "run.started", lambda r: True, 0)} | {
        r["id"]
        for kind in {f["kind"] for f in FORGED}
        for r in records_where(secure, kind, lambda r: True, 0)
    }


def test_control_the_forged_records_are_valid_records_for_their_subject() -> None:
    """Without the ownership and clock checks, the ingest (its fast path, then pydantic) took
    each of these as alpha's record: they are well formed and name the subject's agent."""
    for fields in FORGED:
        body = forged_body(fields)
        fast = check_wire_record(body)
        assert fast is not None and fast.agent == "alpha" and fast.kind == fields["kind"]
        assert DecisionRecord.from_wire(body).kind == fields["kind"]
    dated_1970 = forged_body({"kind": "run.started"}, ts=0.0)
    fast = check_wire_record(dated_1970)
    assert fast is not None and fast.ts == 0.0


async def test_a_replica_cannot_write_the_daemons_or_operators_records(
    secure: DaemonProcess,
) -> None:
    bodies = [forged_body(fields) for fields in FORGED]
    allowed = forged_body({"kind": "run.started", "run_id": "run-honest"})
    await publish(secure, [*bodies[:2], allowed, *bodies[2:]])
    rejected = rejected_for(secure, len(FORGED), "may not write")
    kinds = {json.loads(b)["kind"] for b in bodies}
    assert {k for k in kinds if any(f"write '{k}' records" in r["reason"] for r in rejected)} == (
        kinds
    )
    for record in rejected:
        assert record["source"] == "daemon" and record["decision"] == "rejected"
        assert record["inputs"]["subject"] == "agentd.trace.alpha"
    ids = stored_ids(secure)
    assert not {json.loads(b)["id"] for b in bodies} & ids
    # the rest of the batch is unaffected: the honest run record is stored, under its source
    honest = records_where(secure, "run.started", lambda r: r["id"] == json.loads(allowed)["id"])
    assert honest and honest[0]["source"] == "agent:alpha" and honest[0]["agent"] == "alpha"


async def test_a_replica_cannot_date_a_record_in_1970_or_next_week(secure: DaemonProcess) -> None:
    old = forged_body({"kind": "run.started"}, ts=0.0)
    future = forged_body({"kind": "run.finished"}, ts=time.time() + 7 * 86400)
    await publish(secure, [old, future])
    rejected = rejected_for(secure, 2, "max_clock_skew_s")
    assert len(rejected) >= 2
    assert any("before the time the trace stream stored it" in r["reason"] for r in rejected)
    assert any("after the time the trace stream stored it" in r["reason"] for r in rejected)
    assert not {json.loads(old)["id"], json.loads(future)["id"]} & stored_ids(secure)


async def test_a_replica_cannot_claim_to_be_the_daemon(secure: DaemonProcess) -> None:
    body = forged_body({"kind": "run.started", "source": "daemon"})
    await publish(secure, [body])
    assert rejected_for(secure, 1, "claims source 'daemon'")
    assert json.loads(body)["id"] not in stored_ids(secure)


async def test_every_stored_record_says_who_wrote_it(secure: DaemonProcess) -> None:
    note = forged_body({"kind": "x.alpha.note"})
    await publish(secure, [note])
    notes = records_where(secure, "x.alpha.note", lambda r: True)
    assert notes and {r["source"] for r in notes} == {"agent:alpha"}
    shown = secure.agentctl("trace", json.loads(note)["id"])
    assert shown.returncode == 0 and "from agent:alpha" in shown.stdout, shown.stderr
    daemon_kinds = records_where(secure, "agent.spawned", lambda r: True)
    assert daemon_kinds and {r["source"] for r in daemon_kinds} == {"daemon"}
