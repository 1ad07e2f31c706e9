"""DecisionLog: appending, dedupe, checkpoints, reopening, keys, queries, export, threads."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from agentd.trace import (
    DecisionLog,
    DecisionLogDamaged,
    DecisionLogError,
    DecisionRecord,
    public_key_path,
)
from agentd.trace._keyindex import BLOCK_SIZE
from agentd.trace.verifier import leaf_hash, load_public_key

from .conftest import LogFactory, make_record, tamper


def test_append_commits_and_drops_duplicates_by_id(open_log: LogFactory) -> None:
    log = open_log()
    records = [make_record(i) for i in range(10)]
    first = log.append_batch(records[:6] + records[:2])
    assert (first.appended, first.duplicates, first.tree_size) == (6, 2, 6)
    second = log.append_batch(records[4:])
    assert (second.appended, second.duplicates, second.tree_size) == (4, 2, 10)
    assert log.append_batch([]).appended == 0
    stored = [r.record.id for r in log.find(limit=100)]
    assert stored == [r.id for r in records]
    assert log.verify().ok


def test_a_failed_batch_stores_nothing_and_the_chain_continues(open_log: LogFactory) -> None:
    log = open_log()
    log.append_batch([make_record(0)])
    bad = DecisionRecord(kind="llm.call", reason="lone \ud800")
    with pytest.raises(ValueError):
        log.append_batch([make_record(1), bad])
    assert log.tree_size == 1
    assert log.append_batch([make_record(1)]).tree_size == 2
    assert log.verify().ok


def test_signing_key_is_created_private_with_a_public_copy(
    open_log: LogFactory, state_dir: Path
) -> None:
    log = open_log()
    key_file = state_dir / "decision-log.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    public = load_public_key(public_key_path(key_file).read_bytes())
    assert public.public_bytes_raw() == log.public_key.public_bytes_raw()


def test_a_key_readable_by_others_is_refused(open_log: LogFactory, state_dir: Path) -> None:
    open_log().close()
    os.chmod(state_dir / "decision-log.key", 0o644)
    with pytest.raises(DecisionLogError, match="chmod 600"):
        open_log()


def test_a_different_key_cannot_extend_a_signed_log(open_log: LogFactory, state_dir: Path) -> None:
    log = open_log()
    log.append_batch([make_record(0)])
    log.close()
    key_file = state_dir / "decision-log.key"
    key_file.unlink()
    with pytest.raises(DecisionLogError, match="restore the original key"):
        open_log()


def test_checkpoints_every_n_records_and_on_close(open_log: LogFactory, state_dir: Path) -> None:
    log = open_log(checkpoint_every=5)
    for i in range(12):
        log.append(make_record(i))
    log.close()
    log.close()  # twice is fine
    with pytest.raises(DecisionLogError, match="closed"):
        log.append(make_record(99))
    conn = sqlite3.connect(state_dir / "decisions.db")
    sizes = [row[0] for row in conn.execute("SELECT tree_size FROM checkpoints ORDER BY 1")]
    conn.close()
    assert sizes == [5, 10, 12]


def test_reopen_continues_the_chain(open_log: LogFactory) -> None:
    log = open_log(checkpoint_every=4)
    log.append_batch([make_record(i) for i in range(10)])
    log.close()
    reopened = open_log(checkpoint_every=4)
    assert reopened.tree_size == 10
    reopened.append_batch([make_record(i) for i in range(8, 15)])  # 8, 9 are duplicates
    assert reopened.tree_size == 15
    report = reopened.verify()
    assert report.ok, report.reason
    assert report.checked == 15


def test_reopen_after_a_crash_replays_the_unsigned_tail(
    open_log: LogFactory, state_dir: Path
) -> None:
    log = open_log(checkpoint_every=100)
    log.append_batch([make_record(i) for i in range(30)])
    # A crash: the connection goes away without close(), so no final checkpoint.
    log._conn.close()
    log._closed = True
    reopened = open_log(checkpoint_every=100)
    assert reopened.tree_size == 30
    reopened.append_batch([make_record(30)])
    assert reopened.verify().ok


def test_reopen_refuses_a_tail_that_does_not_chain(open_log: LogFactory, state_dir: Path) -> None:
    log = open_log(checkpoint_every=100)
    log.append_batch([make_record(i) for i in range(30)])
    log._conn.close()
    log._closed = True
    tamper(state_dir / "decisions.db", "UPDATE records SET body = body || ' ' WHERE seq = 17")
    with pytest.raises(DecisionLogDamaged) as caught:
        open_log()
    assert caught.value.seq == 17


def test_find_by_ids_uses_block_filters_and_matches_a_scan(open_log: LogFactory) -> None:
    log = open_log()
    n = BLOCK_SIZE * 2 + 300
    records = [make_record(i) for i in range(n)]
    records[1500] = make_record(1500, run_id="rare-run")
    log.append_batch(records)
    assert [r.seq for r in log.find(run_id="rare-run")] == [1501]
    expected = [i + 1 for i, r in enumerate(records) if r.conversation_id == "conv-3"]
    assert [r.seq for r in log.find(conversation_id="conv-3", limit=n)] == expected
    both = [
        i + 1
        for i, r in enumerate(records)
        if r.run_id == "run-2" and r.trace_id == f"{4:032x}" and r.agent == "agent-1"
    ]
    found = log.find(run_id="run-2", trace_id=f"{4:032x}", agent="agent-1", limit=n)
    assert [r.seq for r in found] == both
    assert len(log.find(conversation_id="conv-1", limit=7)) == 7
    assert log.find(run_id="no-such-run") == []
    got = log.get(records[7].id)
    assert got is not None and got.record == records[7] and got.seq == 8


def test_find_and_get_read_through_one_connection_each(
    open_log: LogFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log()
    records = [make_record(i) for i in range(BLOCK_SIZE * 3 + 10)]
    for index in (10, BLOCK_SIZE * 2 + 10):  # two blocks apart: two candidate ranges
        records[index] = make_record(index, run_id="rare-run")
    log.append_batch(records)
    opened: list[object] = []
    real_connect = sqlite3.connect

    def counting_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(args[0])
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", counting_connect)
    assert [r.seq for r in log.find(run_id="rare-run")] == [11, BLOCK_SIZE * 2 + 11]
    assert len(opened) == 1, opened  # the key filters and every range: one snapshot
    got = log.get(records[7].id)
    assert got is not None and got.seq == 8 and len(opened) == 2


def test_find_by_time_and_kind(open_log: LogFactory) -> None:
    log = open_log()
    log.append_batch(
        [
            make_record(i, ts=1000.0 + i, kind="llm.call" if i % 2 else "tool.denied")
            for i in range(20)
        ]
    )
    found = log.find(since=1005.0, until=1010.0, kind="llm.call")
    assert [r.record.ts for r in found] == [1005.0, 1007.0, 1009.0]


def test_export_lines_let_an_auditor_recompute_the_chain(open_log: LogFactory) -> None:
    log = open_log()
    log.append_batch([make_record(i, ts=2000.0 + i) for i in range(12)])
    lines = list(log.export(since=2003.0, until=2009.0))
    assert len(lines) == 6
    rows = [json.loads(line) for line in lines]
    assert [r["seq"] for r in rows] == list(range(4, 10))
    for row, following in zip(rows, rows[1:], strict=False):
        assert following["prev_hash"] == row["hash"]
    for row in rows:
        expected = hashlib.sha256(
            bytes.fromhex(row["prev_hash"]) + leaf_hash(row["body"].encode())
        ).hexdigest()
        assert row["hash"] == expected
        assert DecisionRecord.from_body(row["body"]).ts == 2000.0 + row["seq"] - 1
    assert len(list(log.export())) == 12


def test_concurrent_threads_lose_nothing(open_log: LogFactory) -> None:
    log = open_log(checkpoint_every=50)

    def writer(t: int) -> None:
        for b in range(25):
            log.append_batch([make_record(t * 1000 + b * 10 + i) for i in range(10)])

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.tree_size == 1000
    report = log.verify()
    assert report.ok and report.checked == 1000


@pytest.mark.anyio
async def test_async_service_appends_through_worker_threads(open_log: LogFactory) -> None:
    log = open_log(checkpoint_every=20)
    results: list[int] = []

    async def ingest(batch_no: int) -> None:
        batch = [make_record(batch_no * 100 + i) for i in range(10)]
        result = await anyio.to_thread.run_sync(log.append_batch, batch)
        results.append(result.appended)

    async with anyio.create_task_group() as tg:
        for batch_no in range(8):
            tg.start_soon(ingest, batch_no)
    assert sum(results) == 80
    assert (await anyio.to_thread.run_sync(log.verify)).ok


def test_a_second_writer_on_the_same_file_is_detected(open_log: LogFactory) -> None:
    first = open_log()
    second = open_log()
    first.append_batch([make_record(0)])
    with pytest.raises(DecisionLogError, match="another process"):
        second.append_batch([make_record(1)])
    assert first.verify().ok


def test_log_rejects_bad_settings(state_dir: Path) -> None:
    with pytest.raises(ValueError):
        DecisionLog(state_dir / "x.db", signing_key_path=state_dir / "k", checkpoint_every=0)
