"""Anchoring the log outside its file: RFC 6962 consistency proofs, witnessed checkpoints, and a
writer that refuses to extend a log rewritten behind the checkpoints it published."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from agentd.trace import (
    DecisionLog,
    DecisionLogDamaged,
    WitnessEntry,
    check_witness_chain,
    read_witness_file,
    verify_consistency,
    verify_log,
)
from agentd.trace._merkle import MerkleFrontier, consistency_path, subtree_root
from agentd.trace.verifier import key_id, leaf_hash
from agentd.trace.verifier import main as verifier_main

from .conftest import LogFactory, make_record

N = 40


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(f"record {i}".encode()) for i in range(n)]


def proof_for(all_leaves: list[bytes], m: int, n: int) -> list[bytes]:
    old = MerkleFrontier()
    for leaf in all_leaves[:m]:
        old.append(leaf)
    return consistency_path(old, all_leaves[m:n])


def test_consistency_proofs_verify_for_every_pair_of_sizes() -> None:
    hashes = leaves(70)
    for n in range(1, 70):
        for m in range(n + 1):
            root_m, root_n = subtree_root(hashes[:m]), subtree_root(hashes[:n])
            proof = proof_for(hashes, m, n)
            assert verify_consistency(m, n, root_m, root_n, proof) is None, (m, n)


def test_rfc6962_example_proof_sizes() -> None:
    """RFC 6962 section 2.1.3: the proofs from 3 and 4 (and 6) to 7 leaves."""
    hashes = leaves(7)
    assert len(proof_for(hashes, 3, 7)) == 4  # c, d, g, l
    assert len(proof_for(hashes, 4, 7)) == 1  # l
    assert len(proof_for(hashes, 6, 7)) == 3  # i, j, k


@pytest.mark.parametrize(("m", "n"), [(1, 2), (3, 7), (4, 7), (6, 7), (13, 40), (32, 33)])
def test_tampered_consistency_proofs_are_refused(m: int, n: int) -> None:
    hashes = leaves(n)
    root_m, root_n = subtree_root(hashes[:m]), subtree_root(hashes[:n])
    proof = proof_for(hashes, m, n)
    assert verify_consistency(m, n, root_m, root_n, proof) is None
    for i in range(len(proof)):  # any node changed
        bad = list(proof)
        bad[i] = hashlib.sha256(bad[i]).digest()
        assert verify_consistency(m, n, root_m, root_n, bad) is not None
    assert verify_consistency(m, n, root_m, root_n, proof[:-1]) is not None  # a node missing
    assert verify_consistency(m, n, root_m, root_n, [*proof, proof[0]]) is not None  # one more
    # a rewritten old record: the same proof no longer joins the old root to the new one
    forged = [hashlib.sha256(b"forged").digest(), *hashes[1:]]
    assert verify_consistency(m, n, subtree_root(forged[:m]), root_n, proof) is not None
    assert verify_consistency(m, n, root_m, subtree_root(forged[:n]), proof) is not None
    assert verify_consistency(n, m, root_n, root_m, proof) is not None  # shrinking


# -- a log with witnessed checkpoints ------------------------------------------------------------


def written(open_log: LogFactory) -> tuple[DecisionLog, list[WitnessEntry]]:
    """40 records, checkpoints at 10, 20, 30, 40, each witnessed as the daemon publishes it."""
    log = open_log(checkpoint_every=10)
    entries: list[WitnessEntry] = []
    for lo in range(0, N, 5):
        log.append_batch([make_record(i) for i in range(lo, lo + 5)])
        current = log.last_checkpoint
        previous = entries[-1].checkpoint if entries else None
        if current is not None and (previous is None or current.tree_size > previous.tree_size):
            entries.append(log.witness_entry(previous, current))
    return log, entries


def rewrite(db: Path, seq: int, *, delete_checkpoints_from: int | None = None) -> None:
    """The attack: change record `seq`, recompute the chain after it, delete the checkpoints
    at or after it."""
    conn = sqlite3.connect(db, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute(
        "UPDATE records SET body = replace(body, 'needle', 'haystk') WHERE seq = ?", (seq,)
    )
    prev = bytes.fromhex(
        conn.execute("SELECT hash FROM records WHERE seq = ?", (seq - 1,)).fetchone()[0]
    )
    for s, body in conn.execute("SELECT seq, body FROM records WHERE seq >= ?", (seq,)).fetchall():
        new = hashlib.sha256(prev + leaf_hash(body.encode())).digest()
        conn.execute(
            "UPDATE records SET prev_hash = ?, hash = ? WHERE seq = ?", (prev.hex(), new.hex(), s)
        )
        prev = new
    cut = seq if delete_checkpoints_from is None else delete_checkpoints_from
    conn.execute("DELETE FROM checkpoints WHERE tree_size >= ?", (cut,))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def test_witness_entries_carry_consistency_proofs(open_log: LogFactory) -> None:
    log, entries = written(open_log)
    assert [e.checkpoint.tree_size for e in entries] == [10, 20, 30, 40]
    assert [e.previous_size for e in entries] == [0, 10, 20, 30]
    keys = {key_id(log.public_key): log.public_key}
    assert check_witness_chain(entries, keys, log.log_id) is None
    round_trip = [WitnessEntry.from_json(e.to_json()) for e in entries]
    assert round_trip == entries
    assert log.verify(witness=entries).ok


def test_a_tampered_witness_proof_is_named(open_log: LogFactory) -> None:
    log, entries = written(open_log)
    keys = {key_id(log.public_key): log.public_key}
    third = entries[2]
    bad = WitnessEntry(third.checkpoint, third.previous_size, (bytes(32), *third.consistency[1:]))
    found = check_witness_chain([*entries[:2], bad, entries[3]], keys, log.log_id)
    assert found is not None and found[0] == 30 and "not consistent with the one at 20" in found[1]


def test_the_rewrite_attack_verifies_without_a_witness_and_fails_with_one(
    open_log: LogFactory, state_dir: Path
) -> None:
    log, entries = written(open_log)
    log.close()
    db = state_dir / "decisions.db"
    rewrite(db, 21)
    # control: the file alone still verifies (the attack of issue 18, item 4)
    alone = verify_log(db, [log.public_key])
    assert alone.ok, alone.reason
    report = verify_log(db, [log.public_key], witness=entries)
    assert not report.ok
    assert (report.first_bad_seq, report.first_bad_id) == (21, "rec-000020")
    assert "published outside the log at tree size 30" in report.reason


def test_checkpoints_deleted_from_an_intact_log_are_named(
    open_log: LogFactory, state_dir: Path
) -> None:
    log, entries = written(open_log)
    log.close()
    db = state_dir / "decisions.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER checkpoints_no_delete")
    conn.execute("DELETE FROM checkpoints WHERE tree_size >= 20")
    conn.close()
    assert verify_log(db, [log.public_key]).ok  # control
    report = verify_log(db, [log.public_key], witness=entries)
    assert not report.ok and report.bad_checkpoint == 20
    assert "checkpoint signed at tree size 20 is missing from the log" in report.reason


def test_a_truncated_tail_behind_a_witnessed_checkpoint_is_named(
    open_log: LogFactory, state_dir: Path
) -> None:
    log, entries = written(open_log)
    log.close()
    db = state_dir / "decisions.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DELETE FROM records WHERE seq > 33")
    conn.execute("DELETE FROM checkpoints WHERE tree_size > 33")
    conn.close()
    assert verify_log(db, [log.public_key]).ok  # control
    report = verify_log(db, [log.public_key], witness=entries)
    assert not report.ok and report.first_bad_seq == 34 and "truncated" in report.reason


def test_the_writer_refuses_to_extend_a_log_that_does_not_extend_its_anchor(
    open_log: LogFactory, state_dir: Path
) -> None:
    log, entries = written(open_log)
    log.close()
    db = state_dir / "decisions.db"
    rewrite(db, 21)
    # control: without an anchor the reopened writer signs over the forged record
    unanchored = DecisionLog(db, signing_key_path=state_dir / "decision-log.key")
    assert unanchored.tree_size == N
    unanchored.close()
    assert verify_log(db, [log.public_key]).ok
    rewrite(db, 21, delete_checkpoints_from=21)  # remove what that run signed, too
    anchored = DecisionLog(db, signing_key_path=state_dir / "decision-log.key", anchored=True)
    try:
        with pytest.raises(DecisionLogDamaged) as caught:
            anchored.anchor(entries[-1].checkpoint)
        message = str(caught.value)
        assert "checkpoint signed at tree size 40" in message
        assert "record 21 (id rec-000020) is the first that can be the changed one" in message
        assert caught.value.seq == 21
        with pytest.raises(DecisionLogDamaged):
            anchored.append(make_record(100))
    finally:
        anchored.close()
    conn = sqlite3.connect(db)
    sizes = [r[0] for r in conn.execute("SELECT tree_size FROM checkpoints ORDER BY tree_size")]
    conn.close()
    assert sizes == [10, 20]  # nothing was signed over the rewritten records


def test_an_anchored_writer_signs_nothing_before_its_anchor_is_checked(
    state_dir: Path,
) -> None:
    state_dir.mkdir()
    log = DecisionLog(
        state_dir / "decisions.db",
        signing_key_path=state_dir / "decision-log.key",
        checkpoint_every=5,
        anchored=True,
    )
    log.append_batch([make_record(i) for i in range(12)])
    assert log.last_checkpoint is None and log.checkpoint() is None
    log.anchor(None)  # nothing was published yet
    log.append_batch([make_record(12)])
    assert log.last_checkpoint is not None and log.last_checkpoint.tree_size == 13
    log.close()


def test_a_rewrite_under_a_running_writer_stops_its_next_write(
    open_log: LogFactory, state_dir: Path
) -> None:
    log, _ = written(open_log)
    log.append_batch([make_record(i) for i in range(N, N + 3)])  # 41..43 after checkpoint 40
    rewrite(state_dir / "decisions.db", 42, delete_checkpoints_from=10_000)
    with pytest.raises(DecisionLogDamaged) as caught:
        log.append_batch([make_record(99)])
    message = str(caught.value)
    assert "record 43's stored hash is not the chain head the writer built" in message
    assert "checkpoint signed at tree size 40" in message and "record 41" in message
    with pytest.raises(DecisionLogDamaged):
        log.append_batch([make_record(100)])
    log.close()  # signs nothing over the rewritten records
    conn = sqlite3.connect(state_dir / "decisions.db")
    assert conn.execute("SELECT max(tree_size) FROM checkpoints").fetchone()[0] == 40
    conn.close()


def test_the_standalone_verifier_checks_a_witness_file(
    open_log: LogFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, entries = written(open_log)
    path = tmp_path / "witness.jsonl"
    path.write_text("".join(e.to_json() + "\n" for e in entries))
    assert read_witness_file(path) == entries
    key = log.public_key.public_bytes_raw().hex()
    assert verifier_main(["--witness", str(path), "--public-key", key]) == 0
    assert "4 checkpoints" in capsys.readouterr().out
    lines = path.read_text().splitlines()
    third = json.loads(lines[2])
    third["consistency"][0] = "00" * 32
    lines[2] = json.dumps(third)
    path.write_text("\n".join(lines) + "\n")
    assert verifier_main(["--witness", str(path), "--public-key", key]) == 1
    assert "tree size 30" in capsys.readouterr().out


def test_proofs_from_the_writers_kept_leaves_equal_those_rebuilt_from_the_file(
    state_dir: Path,
) -> None:
    state_dir.mkdir()
    log = DecisionLog(
        state_dir / "decisions.db",
        signing_key_path=state_dir / "decision-log.key",
        checkpoint_every=7,
        anchored=True,
    )
    log.anchor(None)
    kept: list[WitnessEntry] = []
    for lo in range(0, 60, 4):
        log.append_batch([make_record(i) for i in range(lo, lo + 4)])
        current, previous = log.last_checkpoint, kept[-1].checkpoint if kept else None
        if current is not None and (previous is None or current.tree_size > previous.tree_size):
            kept.append(log.witness_entry(previous, current))
    log.close()
    keys = {key_id(log.public_key): log.public_key}
    assert len(kept) >= 6 and check_witness_chain(kept, keys, log.log_id) is None
    reopened = DecisionLog(
        state_dir / "decisions.db", signing_key_path=state_dir / "decision-log.key"
    )
    try:  # not anchored: every proof is rebuilt from the file
        for before, entry in zip(kept, kept[1:], strict=False):
            rebuilt = reopened.witness_entry(before.checkpoint, entry.checkpoint)
            assert rebuilt == entry
    finally:
        reopened.close()


def test_a_truncated_or_replaced_file_is_refused_at_the_anchor(
    open_log: LogFactory, state_dir: Path, tmp_path: Path
) -> None:
    log, entries = written(open_log)
    log.close()
    db = state_dir / "decisions.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DELETE FROM records WHERE seq > 25")
    conn.execute("DELETE FROM checkpoints WHERE tree_size > 25")
    conn.close()
    key = state_dir / "decision-log.key"
    truncated = DecisionLog(db, signing_key_path=key, anchored=True)
    with pytest.raises(DecisionLogDamaged, match=r"records 26\.\.40 are missing .* truncated"):
        truncated.anchor(entries[-1].checkpoint)
    truncated.close()
    other = DecisionLog(tmp_path / "new.db", signing_key_path=key, anchored=True)
    with pytest.raises(DecisionLogDamaged, match="the decision log file was replaced"):
        other.anchor(entries[-1].checkpoint)
    other.close()
