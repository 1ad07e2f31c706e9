"""Tampering with the SQLite file: verify names exactly the first bad record and why."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentd.trace import DecisionLog, DecisionLogDamaged, VerifyReport, verify_log
from agentd.trace.verifier import leaf_hash

from .conftest import LogFactory, make_record, tamper

N = 40


@pytest.fixture
def closed_log(open_log: LogFactory, state_dir: Path) -> tuple[DecisionLog, Path]:
    """40 records, checkpoints at 10, 20, 30 and 40 (on close); the log is closed."""
    log = open_log(checkpoint_every=10)
    for lo in range(0, N, 5):
        log.append_batch([make_record(i) for i in range(lo, lo + 5)])
    log.close()
    return log, state_dir / "decisions.db"


def verify(
    log: DecisionLog, db: Path, *, from_seq: int | None = None, to_seq: int | None = None
) -> VerifyReport:
    return verify_log(db, [log.public_key], from_seq=from_seq, to_seq=to_seq)


def test_untouched_log_verifies(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    report = verify(log, db)
    assert report.ok, report.reason
    assert (report.checked, report.checkpoints_checked, report.signed_through) == (N, 4, N)


def test_flipped_byte_in_the_file_names_the_record(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    data = bytearray(db.read_bytes())
    at = data.find(b"needle-00017")
    assert at > 0 and data.find(b"needle-00017", at + 1) == -1
    data[at + len("needle-0001")] ^= 0x01  # '7' -> '6': the row stays valid text
    db.write_bytes(bytes(data))
    report = verify(log, db)
    assert not report.ok
    assert (report.first_bad_seq, report.first_bad_id) == (18, "rec-000017")
    assert "body altered" in report.reason


def test_changed_hash_is_named(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    tamper(db, "UPDATE records SET hash = ? WHERE seq = 9", params=("00" * 32,))
    report = verify(log, db)
    assert (report.ok, report.first_bad_seq, report.first_bad_id) == (False, 9, "rec-000008")
    assert "hash altered" in report.reason


def test_changed_prev_hash_is_named(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    tamper(db, "UPDATE records SET prev_hash = hash WHERE seq = 12")
    report = verify(log, db)
    assert (report.first_bad_seq, report.first_bad_id) == (12, "rec-000011")
    assert "prev_hash" in report.reason


def test_changed_column_is_named(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    tamper(db, "UPDATE records SET agent = 'mallory' WHERE seq = 25")
    report = verify(log, db)
    assert (report.first_bad_seq, report.first_bad_id) == (25, "rec-000024")
    assert "column agent" in report.reason


def test_deleted_row_is_named(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    tamper(db, "DELETE FROM records WHERE seq = 23")
    report = verify(log, db)
    assert (report.first_bad_seq, report.first_bad_id) == (23, None)
    assert "record 23 is missing" in report.reason


def test_deleted_first_rows_are_named(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    tamper(db, "DELETE FROM records WHERE seq <= 3")
    report = verify(log, db)
    assert report.first_bad_seq == 1
    assert "record 1 is missing" in report.reason


def test_deleted_and_renumbered_rows_are_named(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    tamper(
        db, "DELETE FROM records WHERE seq = 30", "UPDATE records SET seq = seq - 1 WHERE seq > 30"
    )
    report = verify(log, db)
    assert (report.first_bad_seq, report.first_bad_id) == (30, "rec-000030")
    assert "prev_hash" in report.reason


def test_swapped_bodies_name_the_first(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    conn = sqlite3.connect(db)
    body3, body7 = (
        conn.execute("SELECT body FROM records WHERE seq = ?", (s,)).fetchone()[0] for s in (3, 7)
    )
    conn.close()
    tamper(db, "UPDATE records SET body = ? WHERE seq = 3", params=(body7,))
    tamper(db, "UPDATE records SET body = ? WHERE seq = 7", params=(body3,))
    report = verify(log, db)
    assert (report.first_bad_seq, report.first_bad_id) == (3, "rec-000002")
    assert "body altered" in report.reason


def test_reordered_rows_name_the_first(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    tamper(
        db,
        "UPDATE records SET seq = -1 WHERE seq = 14",
        "UPDATE records SET seq = 14 WHERE seq = 15",
        "UPDATE records SET seq = 15 WHERE seq = -1",
    )
    report = verify(log, db)
    assert (report.first_bad_seq, report.first_bad_id) == (14, "rec-000014")
    assert "prev_hash" in report.reason


def test_truncated_tail_after_a_checkpoint_is_named(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    tamper(db, "DELETE FROM records WHERE seq > 33")
    report = verify(log, db)
    assert (report.first_bad_seq, report.first_bad_id) == (34, None)
    assert "records 34..40 are missing" in report.reason and "truncated" in report.reason
    with pytest.raises(DecisionLogDamaged) as caught:
        DecisionLog(db, signing_key_path=db.parent / "decision-log.key")
    assert caught.value.seq == 34


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE checkpoints SET root = ? WHERE tree_size = 20",
        "UPDATE checkpoints SET signature = substr(signature, 1, 10) || 'ff'"
        " || substr(signature, 13) WHERE tree_size = 20",
        "UPDATE checkpoints SET signed_at_us = signed_at_us + 1 WHERE tree_size = 20",
        "UPDATE checkpoints SET chain_head = ? WHERE tree_size = 20",
    ],
)
def test_edited_checkpoint_is_named(closed_log: tuple[DecisionLog, Path], edit: str) -> None:
    log, db = closed_log
    tamper(db, edit, params=("ab" * 32,))
    report = verify(log, db)
    assert (report.ok, report.bad_checkpoint, report.first_bad_seq) == (False, 20, None)
    assert "checkpoint at tree size 20" in report.reason
    assert report.signed_through == 10


def test_edited_log_id_fails_every_signature(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    tamper(db, "UPDATE meta SET value = 'other' WHERE key = 'log_id'")
    report = verify(log, db)
    assert report.bad_checkpoint == 10


def test_rewritten_chain_is_caught_by_the_next_checkpoint(
    closed_log: tuple[DecisionLog, Path],
) -> None:
    """An attacker edits record 24 and recomputes every hash after it: the chain is intact, the
    signed root at 30 is not, so the report names the first record after the last good
    checkpoint (21), the earliest that can be the changed one."""
    log, db = closed_log
    conn = sqlite3.connect(db, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("UPDATE records SET body = replace(body, 'needle', 'haystk') WHERE seq = 24")
    prev = bytes.fromhex(conn.execute("SELECT hash FROM records WHERE seq = 23").fetchone()[0])
    for seq, body in conn.execute("SELECT seq, body FROM records WHERE seq >= 24").fetchall():
        new = hashlib.sha256(prev + leaf_hash(body.encode())).digest()
        conn.execute(
            "UPDATE records SET prev_hash = ?, hash = ? WHERE seq = ?", (prev.hex(), new.hex(), seq)
        )
        prev = new
    conn.close()
    report = verify(log, db)
    assert (report.ok, report.first_bad_seq, report.first_bad_id) == (False, 21, "rec-000020")
    assert "records 21..30" in report.reason and "rewritten" in report.reason
    assert report.signed_through == 20


def test_verify_a_range_starts_at_the_checkpoint_before_it(
    closed_log: tuple[DecisionLog, Path],
) -> None:
    log, db = closed_log
    tamper(db, "UPDATE records SET hash = ? WHERE seq = 5", params=("00" * 32,))
    late = verify(log, db, from_seq=25, to_seq=35)
    assert late.ok, late.reason
    assert late.checked == 15  # 21..35: from the checkpoint at 20
    early = verify(log, db, from_seq=1, to_seq=8)
    assert (early.ok, early.first_bad_seq) == (False, 5)


def test_corrupt_file_is_reported_not_raised(closed_log: tuple[DecisionLog, Path]) -> None:
    log, db = closed_log
    data = bytearray(db.read_bytes())
    data[0:16] = b"not a database!!"
    db.write_bytes(bytes(data))
    report = verify(log, db)
    assert not report.ok
    assert "database" in report.reason


def test_unknown_key_is_reported(closed_log: tuple[DecisionLog, Path]) -> None:
    _, db = closed_log
    report = verify_log(db, [Ed25519PrivateKey.generate().public_key()])
    assert (report.ok, report.bad_checkpoint) == (False, 10)
    assert "untrusted key" in report.reason
