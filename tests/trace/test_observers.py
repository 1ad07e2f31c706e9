"""The log writer's observers (metrics, the live feed) see every record the log stores, whoever
wrote it, exactly once: the daemon's recorder and replicas' records through the real ingest,
redeliveries and repeats left out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio
import pytest

from agentd.metrics import AgentdMetrics
from agentd.trace import DecisionLog, DecisionRecord, LogWriter, WireRecord
from tests.harness import nats_server

from .conftest import make_record
from .test_ingest import stored, trace_path, wait_for_records

pytestmark = [pytest.mark.anyio]


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("js")) as url:
        yield url


class Seen:
    def __init__(self) -> None:
        self.records: list[DecisionRecord | WireRecord] = []
        self._more = anyio.Event()

    async def __call__(self, records: Sequence[DecisionRecord | WireRecord]) -> None:
        self.records.extend(records)
        self._more.set()
        self._more = anyio.Event()

    async def until(self, count: int) -> None:
        with anyio.fail_after(15):
            while len(self.records) < count:
                await self._more.wait()


@pytest.mark.integration
async def test_replica_and_daemon_records_reach_the_observers_once(
    nats_url: str, tmp_path: Path
) -> None:
    seen, metrics = Seen(), AgentdMetrics()

    async def count(records: Sequence[DecisionRecord | WireRecord]) -> None:
        metrics.observe(records)

    async with trace_path(nats_url, tmp_path) as path:
        path.writer.add_observer(seen)
        path.writer.add_observer(count)
        js = path.nc.jetstream()
        subject = path.subjects.trace("echo")
        published = [
            make_record(i, agent="echo", kind="run.finished", decision="ok", inputs=None)
            for i in range(40)
        ]
        for record in published:
            body = record.body_json().encode()
            await js.publish(subject, body)
            await js.publish(subject, body)  # a redelivery: the log drops it, so must they
        for i in range(10):
            path.recorder.record("message.routed", agent="echo", decision="routed", n=i)
        await wait_for_records(path, 50)
        await seen.until(50)
        await anyio.sleep(0.3)  # a late duplicate would show up here
    ids = [r.id for r in seen.records]
    assert sorted(ids) == sorted(r["id"] for r in stored(tmp_path))
    assert len(ids) == len(set(ids)) == 50
    replicas = [r for r in seen.records if r.kind == "run.finished"]
    assert {type(r) for r in replicas} == {WireRecord}  # the ingest's checked text
    assert {r.source for r in replicas} == {"agent:echo"}
    get = metrics.registry.get_sample_value
    assert get("agentd_decisions_total", {"kind": "run.finished", "decision": "ok"}) == 40
    assert get("agentd_runs_total", {"agent": "echo", "status": "ok"}) == 40
    assert get("agentd_decisions_total", {"kind": "message.routed", "decision": "routed"}) == 10


async def test_ids_the_log_held_and_repeats_in_a_batch_are_not_observed_again(
    tmp_path: Path,
) -> None:
    log = DecisionLog(tmp_path / "decisions.db", signing_key_path=tmp_path / "key")
    writer, seen = LogWriter(log), Seen()
    writer.add_observer(seen)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            await writer.append([make_record(i) for i in range(5)])
            # 0..4 are held already, 5 comes twice in this batch: only 5..7 are new
            await writer.append([make_record(i) for i in (3, 4, 5, 5, 6, 7)])
            await writer.append([make_record(1)])  # nothing new: nothing to observe
            await seen.until(8)
            tg.cancel_scope.cancel()
    finally:
        await writer.close()
    assert [r.id for r in seen.records] == [make_record(i).id for i in range(8)]


async def test_an_observer_that_fails_does_not_stop_the_others_or_the_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = DecisionLog(tmp_path / "decisions.db", signing_key_path=tmp_path / "key")
    writer, seen = LogWriter(log), Seen()

    async def broken(records: Sequence[DecisionRecord | WireRecord]) -> None:
        raise RuntimeError("observer bug")

    writer.add_observer(broken)
    writer.add_observer(seen)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(writer.run)
            for i in range(3):
                await writer.append([make_record(i)])
            await seen.until(3)
            tg.cancel_scope.cancel()
    finally:
        await writer.close()
    assert len(seen.records) == 3
    with DecisionLog(tmp_path / "decisions.db", signing_key_path=tmp_path / "key") as reopened:
        assert reopened.tree_size == 3
    assert "a decision-record observer failed" in caplog.text
