"""The trace path in one process against a real nats-server: TracePublisher -> AGENTD_TRACE ->
TraceIngest -> LogWriter -> DecisionLog (real SQLite file), with the daemon's Recorder sharing
the writer."""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import nats
import pytest
from nats.aio.client import Client

from agentd.bus import Subjects
from agentd.config import TraceConfig
from agentd.daemon._recorder import Recorder
from agentd.trace import (
    REDACTED,
    DecisionLog,
    Lineage,
    LogWriter,
    Redactor,
    TraceIngest,
    TracePublisher,
)
from tests.harness import nats_server

from .conftest import make_record

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("js")) as url:
        yield url


@dataclass
class TracePath:
    nc: Client
    subjects: Subjects
    log: DecisionLog
    writer: LogWriter
    ingest: TraceIngest
    recorder: Recorder


@asynccontextmanager
async def trace_path(
    url: str,
    state: Path,
    prefix: str | None = None,
    redactor: Redactor | None = None,
    **config: object,
) -> AsyncIterator[TracePath]:
    """A running ingest on a fresh prefix (so each test has its own stream)."""
    subjects = Subjects(prefix or f"t{next(_prefixes)}")
    log = DecisionLog(state / "decisions.db", signing_key_path=state / "key", redactor=redactor)
    writer = LogWriter(log)
    recorder = Recorder(writer)
    nc = await nats.connect(url)
    try:
        cfg = TraceConfig.model_validate({"ingest_batch": 200, **config})
        ingest = TraceIngest(nc, subjects, writer, cfg, on_rejected=recorder.record)
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            await tg.start(recorder.run)
            await tg.start(ingest.run)
            yield TracePath(nc, subjects, log, writer, ingest, recorder)
            await ingest.shutdown()
            tg.cancel_scope.cancel()
    finally:
        await recorder.close()
        await nc.close()


async def wait_for_records(path: TracePath, count: int, timeout_s: float = 15.0) -> None:
    with anyio.fail_after(timeout_s):
        while path.log.tree_size < count:
            await path.writer.next_commit()


def stored(state: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{state / 'decisions.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT body FROM records ORDER BY seq").fetchall()
    finally:
        db.close()
    return [json.loads(body) for (body,) in rows]


async def test_published_records_land_in_the_log_with_lineage(
    nats_url: str, tmp_path: Path
) -> None:
    lineage = Lineage(agent_version="v1", spec_hash="sha256:aa", graph_hash="sha256:bb")
    async with trace_path(nats_url, tmp_path) as path:
        publisher = TracePublisher(
            path.nc, path.subjects, "echo", replica="echo-1", lineage=lineage
        )
        async with anyio.create_task_group() as tg:
            await tg.start(publisher.run)
            ids = []
            for i in range(500):
                record = publisher.record("run.started", run_id=f"run-{i}", step=i)
                assert record is not None
                ids.append(record.id)
            assert await publisher.close(timeout_s=10)
        await wait_for_records(path, 500)
        assert path.log.verify().ok
    rows = stored(tmp_path)
    assert [r["id"] for r in rows] == ids  # one publisher: arrival order is record order
    first = rows[0]
    assert first["agent"] == "echo" and first["replica"] == "echo-1"
    assert first["lineage"] == lineage.model_dump(exclude_none=True)
    assert first["attributes"] == {"step": 0}
    assert publisher.published == 500 and publisher.dropped == 0


async def test_a_record_published_twice_is_stored_once(nats_url: str, tmp_path: Path) -> None:
    async with trace_path(nats_url, tmp_path) as path:
        js = path.nc.jetstream()
        subject = path.subjects.trace("echo")
        records = [make_record(i, agent="echo", kind="run.started") for i in range(50)]
        for record in records:
            body = record.body_json().encode()
            # once with the stream's dedupe header, once without: only the log can drop it
            await js.publish(subject, body, headers={"Nats-Msg-Id": record.id})
            await js.publish(subject, body)
            ack = await js.publish(subject, body, headers={"Nats-Msg-Id": record.id})
            assert ack.duplicate
        await wait_for_records(path, 50)
        # everything fetched has been written: the stream's backlog is empty
        with anyio.fail_after(10):
            # the server's state: nothing to wait on but the answer
            while (await js.stream_info(path.subjects.trace_stream)).state.messages:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert path.log.tree_size == 50
    ids = [r["id"] for r in stored(tmp_path)]
    assert sorted(ids) == sorted(r.id for r in records) and len(set(ids)) == 50


async def test_a_malformed_record_is_refused_and_ingest_goes_on(
    nats_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentd.trace")
    async with trace_path(nats_url, tmp_path) as path:
        js = path.nc.jetstream()
        good = [make_record(i, agent="echo", kind="run.started") for i in range(3)]
        await js.publish(path.subjects.trace("echo"), good[0].body_json().encode())
        await js.publish(path.subjects.trace("echo"), b'{"id": "bad-1", "kind": 42}')
        await js.publish(path.subjects.trace("echo"), good[1].body_json().encode())
        forged = make_record(99, agent="bank", kind="run.started").body_json().encode()
        await js.publish(path.subjects.trace("echo"), forged)
        await js.publish(path.subjects.trace("echo"), good[2].body_json().encode())
        # three good records and two trace.rejected records from the daemon's recorder
        await wait_for_records(path, 5)
        assert path.ingest.rejected == 2
    refusals = [r.getMessage() for r in caplog.records if "refused a decision record" in r.msg]
    assert len(refusals) == 2
    subject = path.subjects.trace("echo")
    assert f"on {subject} (stream seq 2, 27 bytes): invalid record: kind" in refusals[0]
    assert "names agent 'bank' but was published on 'echo'" in refusals[1]
    rows = stored(tmp_path)
    assert sorted(r["id"] for r in rows if r["kind"] != "trace.rejected") == [g.id for g in good]
    rejected = [r for r in rows if r["kind"] == "trace.rejected"]
    assert [r["agent"] for r in rejected] == ["echo", "echo"]
    assert rejected[1]["inputs"]["subject"] == subject
    assert "bank" not in json.dumps(rejected[1]["inputs"])  # only a digest of the body


async def test_the_recorder_and_the_ingest_share_one_writer(nats_url: str, tmp_path: Path) -> None:
    async with trace_path(nats_url, tmp_path) as path:
        publisher = TracePublisher(path.nc, path.subjects, "echo")
        async with anyio.create_task_group() as tg:
            await tg.start(publisher.run)
            for i in range(300):
                publisher.record("x.test.worker", n=i)
                path.recorder.record("x.test.daemon", n=i)
                if i % 50 == 0:
                    await anyio.lowlevel.checkpoint()
            assert await publisher.close()
        await wait_for_records(path, 600)
        assert path.log.verify().ok
        # both producers' batches went through the one writer, in fewer transactions than
        # records (see the next test for appends merged into one transaction)
        assert 0 < path.writer.transactions < 600
    kinds = [r["kind"] for r in stored(tmp_path)]
    assert kinds.count("x.test.worker") == 300 and kinds.count("x.test.daemon") == 300


async def test_appends_queued_during_a_write_commit_together(tmp_path: Path) -> None:
    """Appends that queue while the writer's thread is busy go out in one transaction."""
    log = DecisionLog(tmp_path / "decisions.db", signing_key_path=tmp_path / "key")
    writer = LogWriter(log)
    gate = threading.Event()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            async with anyio.create_task_group() as producers:
                producers.start_soon(writer.call, gate.wait)  # holds the writer's one thread
                await anyio.wait_all_tasks_blocked()
                for batch in range(4):
                    records = [make_record(batch * 10 + i) for i in range(10)]
                    producers.start_soon(writer.append, records)
                await anyio.wait_all_tasks_blocked()
                gate.set()
            tg.cancel_scope.cancel()
    finally:
        gate.set()
        await writer.close()
    # the first append may go out alone; the others waited and were merged
    assert writer.transactions <= 2
    with DecisionLog(tmp_path / "decisions.db", signing_key_path=tmp_path / "key") as reopened:
        assert reopened.tree_size == 40


async def test_a_configured_secret_in_a_worker_record_never_reaches_the_sqlite_files(
    nats_url: str, tmp_path: Path
) -> None:
    secret = "sk-" + "Q7x" * 10
    redactor = Redactor([r"sk-[A-Za-z0-9]{20,}"])
    async with trace_path(nats_url, tmp_path, redactor=redactor) as path:
        publisher = TracePublisher(path.nc, path.subjects, "echo")
        async with anyio.create_task_group() as tg:
            await tg.start(publisher.run)
            for i in range(20):
                publisher.record(
                    "x.test.secret",
                    inputs={"api_key": secret, f"header {secret}": "x"},
                    outputs=f"echo {secret}",
                    reason=f"called with {secret}",
                    n=i,
                )
            assert await publisher.close()
        await wait_for_records(path, 20)

        def raw_bytes() -> bytes:
            return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())

        while_open = raw_bytes()
        assert (tmp_path / "decisions.db-wal").stat().st_size > 0  # the WAL holds the records
        assert REDACTED.encode() in while_open
    after_close = raw_bytes()
    for blob in (while_open, after_close):
        assert secret.encode() not in blob
        assert secret.encode("utf-16-le") not in blob
    assert len(stored(tmp_path)) == 20


async def test_records_wait_in_the_stream_until_an_ingest_runs(
    nats_url: str, tmp_path: Path
) -> None:
    """A publisher started before the daemon retries until the stream exists, then the
    backlog is ingested."""
    prefix = f"t{next(_prefixes)}"
    nc = await nats.connect(nats_url)
    try:
        publisher = TracePublisher(nc, Subjects(prefix), "echo", retry_max_s=0.2)
        async with anyio.create_task_group() as tg:
            await tg.start(publisher.run)
            for i in range(20):
                publisher.record("x.test.early", n=i)
            with anyio.fail_after(5):
                # retries are timed by the publisher's backoff: poll its counter
                while publisher.retries == 0:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
            assert publisher.published == 0
            async with trace_path(nats_url, tmp_path, prefix) as path:
                assert await publisher.close(timeout_s=10)
                await wait_for_records(path, 20)
    finally:
        await nc.close()
    assert publisher.published == 20


async def test_a_message_of_several_records_is_checked_record_by_record(
    nats_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentd.trace")
    async with trace_path(nats_url, tmp_path) as path:
        js = path.nc.jetstream()
        subject = path.subjects.trace("echo")
        good = [
            make_record(i, agent="echo", kind="run.started").body_json().encode() for i in range(3)
        ]
        lines = [good[0], b'{"id": "bad-2", "ts": 1.0, "kind": "nope"}', good[1], good[2]]
        await js.publish(subject, b"\n".join(lines), headers={"Agentd-Records": "4"})
        # a count that disagrees with the lines: the message is damaged, nothing is stored
        await js.publish(subject, b"\n".join(good), headers={"Agentd-Records": "2"})
        await wait_for_records(path, 5)  # three records and two trace.rejected
        assert path.ingest.rejected == 2
    refusals = [r.getMessage() for r in caplog.records if "refused a decision record" in r.msg]
    assert (
        "(stream seq 1, line 2, 42 bytes): invalid record: kind: Value error, unknown"
        in (refusals[0])
    )
    assert "Agentd-Records says 2 records, the message has 3" in refusals[1]
    rows = stored(tmp_path)
    assert [r["id"] for r in rows if r["kind"] != "trace.rejected"] == [
        f"rec-{i:06d}" for i in range(3)
    ]


async def test_a_busy_publisher_packs_records_into_fewer_messages(
    nats_url: str, tmp_path: Path
) -> None:
    async with trace_path(nats_url, tmp_path) as path:
        publisher = TracePublisher(path.nc, path.subjects, "echo", max_records_per_message=16)
        for i in range(1000):  # queued before the publisher runs: a burst
            publisher.record("x.test.burst", n=i)
        async with anyio.create_task_group() as tg:
            await tg.start(publisher.run)
            assert await publisher.close()
        await wait_for_records(path, 1000)
        assert path.log.verify().ok
    assert publisher.published == 1000 and publisher.messages <= 1000 / 16 + 1
    assert [r["attributes"]["n"] for r in stored(tmp_path)] == list(range(1000))


async def test_wait_published_returns_once_the_stream_holds_the_records(
    nats_url: str, tmp_path: Path
) -> None:
    prefix = f"t{next(_prefixes)}"
    nc = await nats.connect(nats_url)
    try:
        publisher = TracePublisher(nc, Subjects(prefix), "echo", retry_max_s=0.1)
        async with anyio.create_task_group() as tg:
            await tg.start(publisher.run)
            record = publisher.record("x.test.wait")
            assert record is not None
            record_id = record.id
            # no stream yet: nothing holds the record
            assert not await publisher.wait_published([record_id], timeout_s=0.3)
            async with trace_path(nats_url, tmp_path, prefix) as path:
                assert await publisher.wait_published([record_id], timeout_s=10)
                await wait_for_records(path, 1)
            assert await publisher.close()
    finally:
        await nc.close()
    assert stored(tmp_path)[0]["id"] == record_id
