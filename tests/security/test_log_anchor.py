"""A rewritten decision log no longer verifies, and the daemon does not sign over it
(issue 18, item 4).

The attack, with write access to decisions.db (which every replica has today): change a
record, recompute the hash chain after it, delete the checkpoints at or after it. A real daemon
on its embedded NATS writes the log, anchors each checkpoint in its JetStream key-value bucket
and publishes it to a witness file on "another mount" (a folder outside the state dir).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from agentd.bus import Subjects
from agentd.config import ClusterConfig
from agentd.trace import StreamWitness, read_public_key, verify_log
from agentd.trace.verifier import leaf_hash
from tests.harness import DaemonProcess, running_daemon, write_config

pytestmark = [pytest.mark.integration]

NOTES = 30


def anchored_config(root: Path, *, anchor: bool = True) -> Path:
    witness = root / "other-mount" / "witness.jsonl"
    trace = (
        f"[trace]\ncheckpoint_every = 10\ncheckpoint_interval_s = 0.3\n"
        f"anchor = {json.dumps(anchor)}\n"
        + (f'[trace.witness]\nfile = "{witness}"\nstream = true\n' if anchor else "")
    )
    return write_config(root, enabled=[], extra=trace)


async def publish_notes(daemon: DaemonProcess, count: int, first: int = 0) -> None:
    """Records a worker would publish (x.* on its trace subject), with the daemon's rights."""
    nc = await nats.connect(daemon.url, **daemon.nats_options())
    try:
        js = nc.jetstream()
        for i in range(first, first + count):
            body = {"id": f"note-{i:04d}", "ts": time.time(), "kind": "x.test.note"}
            await js.publish(
                "agentd.trace.echo", json.dumps({**body, "reason": f"paid {i}"}).encode()
            )
    finally:
        await nc.close()


async def stream_entries(daemon: DaemonProcess) -> list[int]:
    nc = await nats.connect(daemon.url, **daemon.nats_options())
    try:
        witness = StreamWitness(nc.jetstream(), Subjects(), ClusterConfig().node)
        return [e.checkpoint.tree_size for e in await witness.entries()]
    finally:
        await nc.close()


def db_rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def witnessed_sizes(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["checkpoint"]["tree_size"] for line in path.read_text().splitlines()]


def write_and_stop(daemon: DaemonProcess, witness: Path | None, *, stop: bool = True) -> None:
    """NOTES records stored in three rounds, each covered by a checkpoint published (when
    anchored; else signed) before the next, then stop."""
    db = daemon.state_dir / "decisions.db"
    for rounds in range(3):
        anyio.run(publish_notes, daemon, NOTES // 3, rounds * (NOTES // 3))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stored = db_rows(db, "SELECT count(*) FROM records WHERE kind = 'x.test.note'")[0][0]
            size = db_rows(db, "SELECT max(seq) FROM records")[0][0] or 0
            sizes = witnessed_sizes(witness) if witness is not None else checkpoint_sizes(db)
            if stored == (rounds + 1) * (NOTES // 3) and sizes and max(sizes) >= size:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"records or checkpoints missing:\n{daemon.log()[-3000:]}")
    if stop:
        assert daemon.stop() == 0, daemon.log()[-3000:]


def rewrite(db: Path, seq: int) -> None:
    """Change record `seq`, recompute the chain after it, delete checkpoints at or after it."""
    conn = sqlite3.connect(db, isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    (body,) = conn.execute("SELECT body FROM records WHERE seq = ?", (seq,)).fetchone()
    forged = json.loads(body)
    forged["reason"] = "paid nothing"
    conn.execute("UPDATE records SET body = ? WHERE seq = ?", (json.dumps(forged), seq))
    (prev_hex,) = conn.execute("SELECT hash FROM records WHERE seq = ?", (seq - 1,)).fetchone()
    prev = bytes.fromhex(prev_hex)
    for s, text in conn.execute("SELECT seq, body FROM records WHERE seq >= ?", (seq,)).fetchall():
        new = hashlib.sha256(prev + leaf_hash(text.encode())).digest()
        conn.execute(
            "UPDATE records SET prev_hash = ?, hash = ? WHERE seq = ?", (prev.hex(), new.hex(), s)
        )
        prev = new
    conn.execute("DELETE FROM checkpoints WHERE tree_size >= ?", (seq,))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def target(db: Path, witness_sizes: list[int]) -> tuple[int, str]:
    """The record just after a witnessed checkpoint that a later one covers, and its id."""
    sizes = sorted(set(witness_sizes))
    seq = sizes[-2] + 1
    (record_id,) = db_rows(db, "SELECT id FROM records WHERE seq = ?", (seq,))[0]
    return seq, str(record_id)


def checkpoint_sizes(db: Path) -> list[int]:
    return [r[0] for r in db_rows(db, "SELECT tree_size FROM checkpoints ORDER BY tree_size")]


def test_a_rewritten_log_fails_verify_and_the_daemon_refuses_to_extend_it(
    tmp_path: Path,
) -> None:
    config = anchored_config(tmp_path)
    witness = tmp_path / "other-mount" / "witness.jsonl"
    with running_daemon(config) as daemon:
        write_and_stop(daemon, witness)
    db, state = daemon.state_dir / "decisions.db", daemon.state_dir
    sizes = witnessed_sizes(witness)
    seq, record_id = target(db, sizes)
    rewrite(db, seq)
    before = checkpoint_sizes(db)
    key = state / "decision-log.key.pub"
    # the file alone still verifies: that is the attack
    assert verify_log(db, [read_public_key(key)]).ok
    offline = daemon.agentctl("audit", "verify", "--log", str(db), "--key", str(key))
    assert offline.returncode == 0 and "warning: no witness given" in offline.stdout
    # with the witness it does not, and the report names the record
    checked = daemon.agentctl(
        "audit", "verify", "--log", str(db), "--key", str(key), "--witness", str(witness)
    )
    assert checked.returncode == 3, checked.stdout + checked.stderr
    assert f"at record {seq} (id {record_id})" in checked.stderr
    # restarted, the daemon refuses to extend the log and signs nothing over it
    restarted = DaemonProcess(config)
    try:
        code = restarted.proc.wait(60)
        log = restarted.log()
    finally:
        restarted.close()
    assert code == 1, log[-3000:]
    assert "agentd: the log does not extend the checkpoint signed at tree size" in log
    assert f"checkpoint signed at tree size {max(sizes)}" in log
    assert "Traceback" not in log
    assert f"record {seq} (id {record_id}) is the first that can be the changed one" in log
    assert checkpoint_sizes(db) == before
    (count,) = db_rows(db, "SELECT max(seq) FROM records")[0]
    assert count >= max(sizes)  # nothing lost either


def test_control_without_the_anchor_the_daemon_signs_over_the_rewrite(tmp_path: Path) -> None:
    config = anchored_config(tmp_path, anchor=False)
    with running_daemon(config) as daemon:
        write_and_stop(daemon, None)
    db = daemon.state_dir / "decisions.db"
    seq, _ = target(db, checkpoint_sizes(db))
    rewrite(db, seq)
    with running_daemon(config) as again:
        assert again.stop() == 0, again.log()[-3000:]
    key = read_public_key(daemon.state_dir / "decision-log.key.pub")
    report = verify_log(db, [key])
    assert report.ok and report.signed_through > seq  # a fresh signature covers the forgery


def test_online_verify_names_a_record_rewritten_under_a_running_daemon(tmp_path: Path) -> None:
    config = anchored_config(tmp_path)
    witness = tmp_path / "other-mount" / "witness.jsonl"
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        write_and_stop(daemon, witness, stop=False)
        db = daemon.state_dir / "decisions.db"
        # the stream witness holds what the file witness holds
        in_stream = anyio.run(stream_entries, daemon)
        assert sorted(in_stream) == witnessed_sizes(witness)
        seq, record_id = target(db, witnessed_sizes(witness))
        rewrite(db, seq)
        report = daemon.agentctl("audit", "verify")
        assert report.returncode == 3, report.stdout + report.stderr
        assert f"at record {seq} (id {record_id})" in report.stderr
        assert "published outside the log" in report.stderr
        # the running writer refuses its next write over the rewritten file
        anyio.run(publish_notes, daemon, 1, 1000)
        deadline = time.monotonic() + 10
        while "rewritten under its writer" not in daemon.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "rewritten under its writer" in daemon.log()
    finally:
        daemon.close()


def test_checkpoints_deleted_from_the_file_are_caught_by_the_witness_file(tmp_path: Path) -> None:
    config = anchored_config(tmp_path)
    witness = tmp_path / "other-mount" / "witness.jsonl"
    with running_daemon(config) as daemon:
        write_and_stop(daemon, witness)
    db, state = daemon.state_dir / "decisions.db", daemon.state_dir
    sizes = witnessed_sizes(witness)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER checkpoints_no_delete")
    conn.execute("DELETE FROM checkpoints WHERE tree_size >= ?", (sizes[1],))
    conn.close()
    key = state / "decision-log.key.pub"
    alone = daemon.agentctl("audit", "verify", "--log", str(db), "--key", str(key))
    assert alone.returncode == 0  # control: the file alone does not show it
    checked = daemon.agentctl(
        "audit", "verify", "--log", str(db), "--key", str(key), "--witness", str(witness)
    )
    assert checked.returncode == 3
    assert f"checkpoint signed at tree size {sizes[1]} is missing from the log" in checked.stderr
