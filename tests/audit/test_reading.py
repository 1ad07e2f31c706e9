"""The audit package on real SQLite files: export pages, read-only readers that never hold up
the writer, runs derived from both sources, trace trees, times as operators type them, and the
metrics registry's fleet sample."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentd.audit import (
    build_trace_tree,
    derive_runs,
    export_page,
    open_reader,
    parse_when,
    run_of_message,
    verify_log_file,
)
from agentd.metrics import AgentdMetrics
from agentd.trace import DecisionLog, DecisionLogError, DecisionRecord


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DecisionLog]:
    decision_log = DecisionLog(
        tmp_path / "decisions.db",
        signing_key_path=tmp_path / "decision-log.key",
        checkpoint_every=8,
    )
    yield decision_log
    decision_log.close()


def records(count: int, start: float = 1_000_000.0, **fields: Any) -> list[DecisionRecord]:
    return [
        DecisionRecord(kind="message.routed", ts=start + i, decision="routed", **fields)
        for i in range(count)
    ]


# -- export pages and readers ------------------------------------------------------------------


def test_pages_concatenate_to_the_whole_export(log: DecisionLog) -> None:
    log.append_batch(records(60, inputs={"text": "x" * 200}))
    whole = list(log.export())
    pages, after = [], 0
    while True:
        page = export_page(log.path, after_seq=after, max_bytes=3000)
        assert page.lines, "a page is never empty before the end"
        pages.append(page.lines)
        if page.next_after is None:
            break
        after = page.next_after
    assert len(pages) >= 5
    assert [line for page in pages for line in page] == whole
    assert all(sum(len(line) + 1 for line in page) <= 3000 + 400 for page in pages)


def test_a_page_holds_one_record_larger_than_the_page(log: DecisionLog) -> None:
    log.append_batch(records(3, inputs={"text": "y" * 5000}))
    page = export_page(log.path, max_bytes=100)
    assert len(page.lines) == 1 and page.next_after == 1


def test_time_window_is_since_inclusive_until_exclusive(log: DecisionLog) -> None:
    log.append_batch(records(10, start=100.0))
    page = export_page(log.path, since=103.0, until=106.0)
    times = [json.loads(json.loads(line)["body"])["ts"] for line in page.lines]
    assert times == [103.0, 104.0, 105.0] and page.next_after is None


def test_an_open_reader_does_not_hold_up_the_writer(log: DecisionLog) -> None:
    log.append_batch(records(5))
    with open_reader(log.path) as conn:
        (before,) = conn.execute("SELECT count(*) FROM records").fetchone()
        done = threading.Event()

        def write() -> None:
            log.append_batch(records(50))
            done.set()

        thread = threading.Thread(target=write)
        thread.start()
        assert done.wait(5), "the writer waited for a reader"
        thread.join()
        (during,) = conn.execute("SELECT count(*) FROM records").fetchone()
        assert before == during == 5  # the reader's snapshot
    with open_reader(log.path) as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone() == (55,)


def test_open_reader_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecisionLogError, match="no decision log"), open_reader(tmp_path / "x.db"):
        pass


def test_offline_verify_uses_the_pub_file_beside_the_log_by_default(log: DecisionLog) -> None:
    log.append_batch(records(20))
    log.checkpoint()
    report, key_file = verify_log_file(log.path)
    assert report.ok and report.checked == 20 and report.signed_through == 20
    assert key_file.name == "decision-log.key.pub"
    with pytest.raises(DecisionLogError, match="no decision log"):
        verify_log_file(log.path.with_name("elsewhere.db"))


# -- runs --------------------------------------------------------------------------------------


def routed(message_id: str, ts: float, agent: str = "intake") -> DecisionRecord:
    return DecisionRecord(
        kind="message.routed",
        ts=ts,
        agent=agent,
        conversation_id="c1",
        decision="routed",
        inputs={"message_id": message_id, "from": "operator:local", "to": agent},
    )


def test_runs_from_routed_messages_and_the_ledger() -> None:
    log_records = [
        routed("m1", 10.0),
        routed("m2", 11.0),
        routed("m3", 12.0),
        DecisionRecord(
            kind="message.dead_lettered",
            ts=13.0,
            agent="intake",
            reason="max_deliver",
            inputs={"message_id": "m3"},
        ),
    ]
    ledger = {
        "m1": {
            "ok": True,
            "run_id": "r1",
            "replica": "intake-0",
            "duration_s": 0.5,
            "received_at": 10.1,
        },
        "m3": {"ok": False, "run_id": "r3", "error": "boom"},
    }
    runs = {r.message_id: r for r in derive_runs(log_records, ledger)}
    assert runs["m1"].status == "ok" and runs["m1"].run_id == "r1"
    assert runs["m1"].duration_s == 0.5 and runs["m1"].finished_at == pytest.approx(10.6)
    assert runs["m1"].sender == "operator:local" and runs["m1"].source == "ledger"
    assert runs["m2"].status == "pending" and runs["m2"].run_id is None
    assert runs["m3"].status == "dead" and runs["m3"].error == "max_deliver"
    assert [r.message_id for r in derive_runs(log_records, ledger)] == ["m3", "m2", "m1"]
    # the dead-letter stream says which pending message gave up, and why; finished runs stay
    dead = {"m2": {"error": "ValueError: nope"}, "m1": {"error": "late"}}
    again = {r.message_id: r for r in derive_runs(log_records, ledger, dead)}
    assert again["m2"].status == "dead" and again["m2"].error == "ValueError: nope"
    assert again["m1"].status == "ok"


def test_run_records_win_and_merge_with_the_routed_message() -> None:
    log_records = [
        routed("m1", 10.0),
        DecisionRecord(
            kind="run.started",
            ts=10.2,
            agent="intake",
            run_id="r1",
            inputs={"message_id": "m1", "sender": "agentctl", "attempt": 1},
        ),
        # finished and failed name the run only, as replicas record them
        DecisionRecord(
            kind="run.failed",
            ts=11.0,
            agent="intake",
            run_id="r1",
            decision="error",
            reason="graph raised",
        ),
        DecisionRecord(kind="run.started", ts=12.0, agent="intake", run_id="r2"),
    ]
    ledger = {"m1": {"ok": True, "run_id": "r1", "duration_s": 0.1}}
    runs = {r.run_id: r for r in derive_runs(log_records, ledger)}
    assert set(runs) == {"r1", "r2"}
    assert runs["r1"].status == "failed" and runs["r1"].error == "graph raised"
    assert runs["r1"].routed_at == 10.0 and runs["r1"].duration_s == pytest.approx(0.8)
    assert runs["r2"].status == "running" and runs["r2"].routed_at is None


def test_a_message_replayed_from_the_dead_letter_stream_shows_its_new_run_only() -> None:
    def run(kind: str, ts: float, run_id: str, **kw: Any) -> DecisionRecord:
        return DecisionRecord(kind=kind, ts=ts, agent="intake", run_id=run_id, **kw)

    dead = DecisionRecord(
        kind="message.dead_lettered",
        ts=11.5,
        agent="intake",
        reason="ValueError: nope",
        inputs={"message_id": "m1"},
    )
    attempts = [
        routed("m1", 10.0),
        run("run.started", 10.2, "r1", inputs={"message_id": "m1"}),
        run("run.failed", 11.0, "r1", decision="error", reason="ValueError: nope"),
        dead,
    ]
    before = {r.message_id: r for r in derive_runs(attempts, {})}
    assert before["m1"].status == "dead" and before["m1"].error == "ValueError: nope"
    replayed = [
        run("run.started", 20.0, "r2", inputs={"message_id": "m1"}),
        run("run.finished", 20.5, "r2", decision="ok"),
    ]
    after = {r.message_id: r for r in derive_runs(attempts + replayed, {})}
    assert after["m1"].status == "ok" and after["m1"].error is None
    assert after["m1"].run_id == "r2"
    # from the ledger alone (a worker that records no runs) the same
    ledger = {"m1": {"ok": True, "run_id": "r2", "received_at": 20.0, "duration_s": 0.5}}
    only_ledger = {r.message_id: r for r in derive_runs([routed("m1", 10.0), dead], ledger)}
    assert only_ledger["m1"].status == "ok" and only_ledger["m1"].error is None
    # an attempt that finished before the dead letter does not undo it
    late_dead = [
        *attempts[:3],
        run("run.started", 11.1, "r1b", inputs={"message_id": "m1"}),
        run("run.finished", 11.2, "r1b", decision="ok"),
        dead,
    ]
    assert {r.message_id: r for r in derive_runs(late_dead, {})}["m1"].status == "dead"


def test_a_message_id_names_its_run_literally_never_as_a_pattern(log: DecisionLog) -> None:
    def started(message_id: str, run_id: str, ts: float) -> DecisionRecord:
        return DecisionRecord(
            kind="run.started", ts=ts, run_id=run_id, inputs={"message_id": message_id}
        )

    log.append_batch(
        [started("msg-1", "r1", 1.0), started("msg_2", "r2", 2.0), started("msg-1", "r3", 3.0)]
    )
    assert run_of_message(log.path, "msg-1") == "r3"  # the newest run that handled it
    assert run_of_message(log.path, "msg_2") == "r2"
    # LIKE's wildcards in an id match only themselves: `agentctl trace %` is not the newest run
    for wildcard in ("%", "_", "msg-_", "msg_1", "msg%", "%-1"):
        assert run_of_message(log.path, wildcard) is None, wildcard
    assert run_of_message(log.path, "msg") is None  # nor is a prefix


# -- trace trees -------------------------------------------------------------------------------


def span_record(
    kind: str, ts: float, span: str, parent: str | None, agent: str, **kw: Any
) -> DecisionRecord:
    return DecisionRecord(
        kind=kind,
        ts=ts,
        agent=agent,
        trace_id="t1",
        span_id=span,
        parent_span_id=parent,
        **kw,
    )


def test_spans_nest_across_three_agents() -> None:
    found = [
        span_record("x.invoke_agent", 1.0, "sA", None, "intake", run_id="rA"),
        span_record("tool.requested", 1.1, "sT", "sA", "intake", run_id="rA"),
        span_record("tool.executed", 1.2, "sT", "sA", "intake", run_id="rA"),
        span_record("message.routed", 1.3, "sM", "sA", "underwriter"),
        span_record("x.invoke_agent", 1.4, "sB", "sM", "underwriter", run_id="rB"),
        span_record(
            "llm.call", 1.5, "sL", "sB", "underwriter", run_id="rB", attributes={"tokens_in": 3}
        ),
        span_record("x.invoke_agent", 1.6, "sC", "sB", "compliance", run_id="rC"),
        DecisionRecord(kind="control.command", ts=0.5, operator="alice", decision="send"),
        DecisionRecord(kind="tool.denied", ts=1.7, agent="compliance", run_id="rC"),
    ]
    tree = build_trace_tree("t1", reversed(found))
    assert [r.kind for r in tree.records] == ["control.command"]
    (run_a,) = [c for c in tree.children if c.kind == "run" and c.key == "rA"]
    (span_a,) = run_a.children
    assert span_a.key == "sA"
    assert [c.key for c in span_a.children] == ["sT", "sM"]
    span_t, span_m = span_a.children
    assert [r.kind for r in span_t.records] == ["tool.requested", "tool.executed"]
    (span_b,) = span_m.children
    assert [c.key for c in span_b.children] == ["sL", "sC"]
    # a record without a span hangs under its run, and the run sits at the top
    (run_c,) = [c for c in tree.children if c.key == "rC"]
    assert [r.kind for r in run_c.records] == ["tool.denied"]
    assert sum(1 for _ in tree.walk()) == len(found)
    assert tree.start == 0.5 and tree.end == 1.7


# -- times -------------------------------------------------------------------------------------


def test_times_as_operators_type_them() -> None:
    now = 1_800_000_000.0
    assert parse_when("90s", now=now) == now - 90
    assert parse_when("2h", now=now) == now - 7200
    assert parse_when("1.5d", now=now) == now - 1.5 * 86400
    assert parse_when("1764140000.25") == 1764140000.25
    assert parse_when("2026-11-26T07:00:00Z") == parse_when("2026-11-26T07:00:00")
    assert parse_when("2026-11-26T08:00:00+01:00") == parse_when("2026-11-26T07:00:00Z")
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when("yesterday")


# -- metrics -----------------------------------------------------------------------------------


def test_fleet_samples_give_replicas_by_state_and_decisions_are_counted() -> None:
    metrics = AgentdMetrics()
    rows = [
        {
            "agent": "echo",
            "desired": 3,
            "backlog": {"pending": 4, "unacked": 1},
            "replicas": [{"state": "running"}, {"state": "running"}, {"state": "backoff"}],
        }
    ]
    metrics.observe_fleet(rows)
    metrics.observe(records(30))
    metrics.observe_fleet(rows)
    get = metrics.registry.get_sample_value
    assert get("agentd_replicas", {"agent": "echo", "state": "running"}) == 2
    assert get("agentd_replicas", {"agent": "echo", "state": "backoff"}) == 1
    assert get("agentd_inbox_backlog_messages", {"agent": "echo", "state": "pending"}) == 4
    # a counter, not a precomputed rate: rate(agentd_decisions_total[1m]) in Prometheus
    assert get("agentd_decisions_per_second") is None
    assert get("agentd_decisions_total", {"kind": "message.routed", "decision": "routed"}) == 30
    # an agent that is gone disappears from the next sample instead of lingering
    metrics.observe_fleet([])
    assert get("agentd_replicas", {"agent": "echo", "state": "running"}) is None
