"""Retention: pruned logs stay verifiable and provable; pruning is not forgeable."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentd.trace import verify_inclusion, verify_log

from .conftest import LogFactory, make_record, tamper


def test_prune_by_count_keeps_the_log_verifiable(open_log: LogFactory, state_dir: Path) -> None:
    log = open_log(checkpoint_every=100)
    log.append_batch([make_record(i) for i in range(250)])
    result = log.prune(max_records=60)
    assert (result.pruned, result.pruned_to) == (190, 190)
    assert log.get("rec-000189") is None
    assert log.get("rec-000190") is not None
    report = log.verify()
    assert report.ok, report.reason
    assert report.checked == 60
    assert log.prune(max_records=60).pruned == 0
    proof = log.prove("rec-000200")
    assert verify_inclusion(proof.to_json(), None, log.public_key).ok
    assert [r.seq for r in log.find(run_id="run-3", limit=1000)] == [
        i + 1 for i in range(190, 250) if i % 7 == 3
    ]
    log.close()
    reopened = open_log(checkpoint_every=100)
    reopened.append_batch([make_record(i) for i in range(250, 260)])
    assert reopened.tree_size == 260
    assert reopened.verify().ok


def test_prune_by_age_stops_at_the_first_young_record(open_log: LogFactory) -> None:
    log = open_log()
    times = [100.0 + i for i in range(30)]
    times[12] = 500.0  # a young record early in the log (a worker's clock ahead)
    log.append_batch([make_record(i, ts=t) for i, t in enumerate(times)])
    result = log.prune(max_age_s=100.0, now=220.0)  # cutoff 120: seqs 1..12 are older
    assert result.pruned_to == 12
    assert log.verify().ok
    assert log.prune(max_age_s=100.0, now=10_000.0).pruned_to == 30
    report = log.verify()
    assert report.ok and report.checked == 0
    log.append(make_record(99))
    assert log.verify().ok


def test_prune_twice_then_prove_an_old_survivor(open_log: LogFactory) -> None:
    log = open_log(checkpoint_every=7)
    for lo in range(0, 100, 3):
        log.append_batch([make_record(i) for i in range(lo, min(lo + 3, 100))])
    log.prune(max_records=80)
    log.prune(max_records=33)
    for record_id in ("rec-000067", "rec-000080", "rec-000099"):
        proof = log.prove(record_id)
        assert verify_inclusion(proof.to_json(), None, log.public_key).ok
    assert log.verify().ok


def test_deleting_more_of_the_head_than_retention_signed_is_caught(
    open_log: LogFactory, state_dir: Path
) -> None:
    log = open_log()
    log.append_batch([make_record(i) for i in range(50)])
    log.prune(max_records=30)
    log.close()
    db = state_dir / "decisions.db"
    tamper(db, "DELETE FROM records WHERE seq <= 25")
    report = verify_log(db, [log.public_key])
    assert (report.ok, report.first_bad_seq) == (False, 21)
    assert "record 21 is missing" in report.reason


def test_forged_retention_statement_is_caught(open_log: LogFactory, state_dir: Path) -> None:
    log = open_log(checkpoint_every=10)
    log.append_batch([make_record(i) for i in range(50)])
    log.prune(max_records=30)  # pruned_to 20, a checkpoint at 20 exists
    log.checkpoint()
    log.close()
    db = state_dir / "decisions.db"
    # Move the boundary to the checkpoint at 50 and drop everything before it.
    tamper(db, "UPDATE retention SET pruned_to = 50", "DELETE FROM records")
    report = verify_log(db, [log.public_key])
    assert not report.ok
    assert "retention statement" in report.reason


@pytest.mark.parametrize("bad", [{"max_records": -1}, {"max_age_s": -5.0}])
def test_prune_rejects_negative_limits(open_log: LogFactory, bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        open_log().prune(**bad)  # type: ignore[arg-type]


def test_triggers_stop_accidental_edits(open_log: LogFactory, state_dir: Path) -> None:
    log = open_log()
    log.append_batch([make_record(i) for i in range(5)])
    conn = sqlite3.connect(state_dir / "decisions.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE records SET agent = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.DatabaseError, match="only by retention"):
        conn.execute("DELETE FROM records WHERE seq = 1")
    conn.close()
