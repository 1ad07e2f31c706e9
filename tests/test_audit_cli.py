"""Auditors' commands through the real agentctl: `audit verify` (through the daemon and offline
on the file), `audit prove` with the standalone verifier, `audit export` in pages, and tampering
with the SQLite file: verify names exactly the first bad record."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.harness import (
    DaemonProcess,
    decision_records,
    free_port,
    running_daemon,
    send_and_collect,
    write_config,
)

pytestmark = pytest.mark.integration

# small checkpoints, so tampering lands both inside signed ranges and after the last checkpoint
CONFIG = "[trace]\ncheckpoint_every = 7\n[metrics]\nport = {port}\n[autoscale]\nenabled = false\n"
VERIFY_FAILED = 3


def agentctl_offline(*args: str) -> subprocess.CompletedProcess[str]:
    """agentctl with no daemon anywhere: no --url, no config to find."""
    return subprocess.run(
        [sys.executable, "-m", "agentd.cli.agentctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


def populate(daemon: DaemonProcess, count: int) -> None:
    # one message per call: send_and_collect may return before the last reply of a batch when
    # earlier replies completed the set it expected so far
    for i in range(count):
        payload = [{"text": f"hello {i}"}]
        results = anyio.run(partial(send_and_collect, daemon.url, "echo", payload, timeout_s=30))
        assert len(results) == 1 and all(r["ok"] for r in results.values()), results


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    directory = tmp_path_factory.mktemp("audit")
    config = write_config(directory, policy="enforce", extra=CONFIG.format(port=free_port()))
    with running_daemon(config) as d:
        populate(d, 4)
        yield d
        assert d.stop() == 0


@dataclass(frozen=True)
class StoppedLog:
    db: Path
    public_key: Path
    count: int


@pytest.fixture(scope="module")
def stopped_log(tmp_path_factory: pytest.TempPathFactory) -> StoppedLog:
    """A decision log written by a real daemon that has since stopped (final checkpoint signed)."""
    directory = tmp_path_factory.mktemp("stopped")
    config = write_config(directory, policy="enforce", extra=CONFIG.format(port=free_port()))
    with running_daemon(config) as d:
        populate(d, 6)
        assert d.stop() == 0
    state = directory / "state"
    count = len(decision_records(state))
    assert count >= 14, count
    return StoppedLog(state / "decisions.db", state / "decision-log.key.pub", count)


def row(db: Path, seq: int) -> tuple[str, str]:
    conn = sqlite3.connect(db)
    try:
        record_id, body = conn.execute(
            "SELECT id, body FROM records WHERE seq = ?", (seq,)
        ).fetchone()
    finally:
        conn.close()
    return str(record_id), str(body)


def tamper(db: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run statements on the file as an attacker would: triggers dropped first."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for trigger in ("records_no_update", "records_no_delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        for sql, params in statements:
            conn.execute(sql, params)
    finally:
        conn.close()


def flip_byte_in_file(db: Path, seq: int) -> None:
    """Change one byte of record `seq`'s body in the raw SQLite file (not through SQL)."""
    _, body = row(db, seq)
    data = bytearray(db.read_bytes())
    at = data.find(body.encode())
    assert at >= 0 and data.find(body.encode(), at + 1) < 0, "the body must occur exactly once"
    target = at + body.index('"kind":"') + len('"kind":"')  # first letter of the kind
    data[target] = ord("X") if data[target] != ord("X") else ord("Y")
    db.write_bytes(bytes(data))


# -- through the daemon ------------------------------------------------------------------------


def test_verify_through_the_daemon_passes_and_a_viewer_may_run_it(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("audit", "verify")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK: ") and "records and" in out.stdout
    viewer = daemon.agentctl("--operator", "carol", "--json", "audit", "verify", "--from", "3")
    assert viewer.returncode == 0, viewer.stderr
    report = json.loads(viewer.stdout)
    assert report["ok"] is True and report["checked"] >= 1 and report["key_id"]
    stranger = daemon.agentctl("--operator", "mallory", "audit", "verify")
    assert stranger.returncode == 1 and "forbidden" in stranger.stderr


def test_export_streams_every_record_in_chain_order(daemon: DaemonProcess, tmp_path: Path) -> None:
    out_file = tmp_path / "export.jsonl"
    out = daemon.agentctl("audit", "export", "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    for before, after in zip(lines, lines[1:], strict=False):
        assert after["prev_hash"] == before["hash"]
    ids = [json.loads(line["body"])["id"] for line in lines]
    stored = [r["id"] for r in decision_records(daemon.dir / "state")]
    assert ids == stored[: len(ids)]
    # small pages stream the same lines, page after page
    paged_file = tmp_path / "paged.jsonl"
    paged = daemon.agentctl("audit", "export", "--out", str(paged_file), "--page-bytes", "2000")
    assert paged.returncode == 0, paged.stderr
    pages = int(paged.stderr.split(" in ")[1].split()[0])
    assert pages >= 3, paged.stderr
    paged_lines = [json.loads(line) for line in paged_file.read_text().splitlines()]
    assert paged_lines[: len(lines)] == lines
    # a time window: only records at or after the middle record's time, none before
    middle = json.loads(lines[len(lines) // 2]["body"])
    window = daemon.agentctl("audit", "export", "--since", repr(middle["ts"]))
    assert window.returncode == 0, window.stderr
    times = [json.loads(json.loads(line)["body"])["ts"] for line in window.stdout.splitlines()]
    assert times and min(times) >= middle["ts"]
    assert len(times) < len(lines) + 5


def test_export_is_recorded_with_the_operator(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("--operator", "carol", "audit", "export", "--since", "1h")
    assert out.returncode == 0, out.stderr
    assert "exported" in out.stderr and out.stdout.count("\n") >= 1
    # the recorder commits within its flush interval (50 ms): poll the file for a few seconds
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        commands = decision_records(daemon.dir / "state", "control.command")
        mine = [c for c in commands if c.get("operator") == "carol"]
        if any(c["decision"] == "audit.export" for c in mine):
            return
        time.sleep(0.05)
    raise AssertionError("no control.command record of carol's export")


def test_a_proof_verifies_with_the_standalone_verifier_and_fails_once_tampered(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    record = decision_records(daemon.dir / "state", "message.routed")[-1]
    proof_file, verifier = tmp_path / "proof.json", tmp_path / "verifier.py"
    out = daemon.agentctl(
        "audit", "prove", record["id"], "--out", str(proof_file), "--verifier-out", str(verifier)
    )
    assert out.returncode == 0, out.stderr
    assert "--public-key" in out.stdout and str(verifier) in out.stdout
    key = daemon.dir / "state" / "decision-log.key.pub"
    # the one-file verifier, run in isolation from agentd (-I: no PYTHONPATH, no cwd on sys.path)
    check = [sys.executable, "-I", str(verifier), str(proof_file), "--public-key", str(key)]
    ok = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: "), ok.stdout + ok.stderr
    assert record["id"] in ok.stdout

    proof = json.loads(proof_file.read_text())
    body = proof["record"]
    proof["record"] = body.replace('"message.routed"', '"message.refused"', 1)
    assert proof["record"] != body
    proof_file.write_text(json.dumps(proof))
    bad = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert bad.returncode == 1 and bad.stdout.startswith("FAILED"), bad.stdout + bad.stderr


def test_prove_names_an_unknown_record(daemon: DaemonProcess) -> None:
    out = daemon.agentctl("audit", "prove", "no-such-record")
    assert out.returncode == 1 and "no-such-record" in out.stderr


# -- offline, on the file ----------------------------------------------------------------------


def test_offline_verify_works_with_the_daemon_stopped(stopped_log: StoppedLog) -> None:
    out = agentctl_offline(
        "audit", "verify", "--log", str(stopped_log.db), "--key", str(stopped_log.public_key)
    )
    assert out.returncode == 0, out.stderr
    assert f"{stopped_log.count} records" in out.stdout
    assert f"signed through record {stopped_log.count}" in out.stdout


@pytest.mark.parametrize("how", ["flip-sql", "flip-file", "delete", "reorder", "truncate"])
def test_tampering_is_caught_and_the_first_bad_record_named(
    stopped_log: StoppedLog, tmp_path: Path, how: str
) -> None:
    db = tmp_path / "decisions.db"
    shutil.copy(stopped_log.db, db)
    # one record inside a signed range and not the last: 7 < seq < count
    seq = 10
    record_id, body = row(db, seq)
    next_id, _ = row(db, seq + 1)
    expected_id: str | None = record_id
    if how == "flip-sql":
        changed = body.replace('"kind":"', '"kind":"X', 1)
        tamper(db, ("UPDATE records SET body = ? WHERE seq = ?", (changed, seq)))
    elif how == "flip-file":
        flip_byte_in_file(db, seq)
    elif how == "delete":
        tamper(db, ("DELETE FROM records WHERE seq = ?", (seq,)))
        expected_id = None  # the record is gone: verify names its seq
    elif how == "reorder":
        tamper(
            db,
            ("UPDATE records SET seq = -1 WHERE seq = ?", (seq,)),
            ("UPDATE records SET seq = ? WHERE seq = ?", (seq, seq + 1)),
            ("UPDATE records SET seq = ? WHERE seq = -1", (seq + 1,)),
        )
        expected_id = next_id  # the record now at position `seq` is the one that was after it
    else:
        tamper(db, ("DELETE FROM records WHERE seq >= ?", (seq,)))
        expected_id = None
    out = agentctl_offline(
        "--json", "audit", "verify", "--log", str(db), "--key", str(stopped_log.public_key)
    )
    assert out.returncode == VERIFY_FAILED, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is False
    assert report["first_bad_seq"] == seq, report
    assert report["first_bad_id"] == expected_id, report
    assert f"record {seq}" in out.stderr, out.stderr
    # the untouched copy still verifies: the failure is the tampering, not the copy
    clean = agentctl_offline(
        "audit", "verify", "--log", str(stopped_log.db), "--key", str(stopped_log.public_key)
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr


def state_copy(stopped_log: StoppedLog, directory: Path) -> Path:
    """A copy of the stopped daemon's log and keys in `directory/state`; returns the config of
    a daemon that reopens it."""
    state = directory / "state"
    state.mkdir()
    shutil.copy(stopped_log.db, state / "decisions.db")
    for name in ("decision-log.key", "decision-log.key.pub"):
        shutil.copy2(stopped_log.db.parent / name, state / name)
    return write_config(directory, policy="enforce", extra=CONFIG.format(port=free_port()))


def test_a_record_taken_from_a_tampered_log_fails_its_proof(
    stopped_log: StoppedLog, tmp_path: Path
) -> None:
    """The daemon that wrote the log proves its record 5; the copy of that record a tampered
    file holds does not verify against the proof's signed root."""
    config = state_copy(stopped_log, tmp_path)
    record_id, body = row(tmp_path / "state" / "decisions.db", 5)
    proof_file = tmp_path / "proof.json"
    with running_daemon(config) as d:
        out = d.agentctl("audit", "prove", record_id, "--out", str(proof_file))
        assert out.returncode == 0, out.stderr
        assert d.stop() == 0
    verify = [sys.executable, "-m", "agentd.trace.verifier", str(proof_file)]
    key = ["--public-key", str(stopped_log.public_key)]
    assert subprocess.run([*verify, *key], capture_output=True, timeout=30).returncode == 0
    tampered = tmp_path / "record.json"
    tampered.write_text(body.replace('"kind":"', '"kind":"X', 1))
    bad = subprocess.run(
        [*verify, *key, "--record", str(tampered)], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 1 and "do not give the signed root" in bad.stdout, bad.stdout


def test_a_daemon_on_a_tampered_log_reports_it_and_refuses_proofs(
    stopped_log: StoppedLog, tmp_path: Path
) -> None:
    """Tampering inside a signed range does not stop the daemon (it replays only what follows
    its last checkpoint), but its verify names the record and it proves nothing over it."""
    config = state_copy(stopped_log, tmp_path)
    db = tmp_path / "state" / "decisions.db"
    record_id, body = row(db, 3)
    later_id, _ = row(db, 5)
    changed = body.replace('"kind":"', '"kind":"X', 1)
    tamper(db, ("UPDATE records SET body = ? WHERE seq = 3", (changed,)))
    assert row(db, 3)[1] != body
    with running_daemon(config) as d:
        out = d.agentctl("--json", "audit", "verify")
        assert out.returncode == VERIFY_FAILED, out.stdout + out.stderr
        report = json.loads(out.stdout)
        assert (report["first_bad_seq"], report["first_bad_id"]) == (3, record_id)
        assert f"record 3 (id {record_id})" in out.stderr
        proof = d.agentctl("audit", "prove", later_id)
        assert proof.returncode == 1 and "DecisionLogDamaged" in proof.stderr, proof.stderr
        assert d.stop() == 0, d.log()[-4000:]
