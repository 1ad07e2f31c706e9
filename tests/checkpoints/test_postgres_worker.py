"""Checkpoints in a real PostgreSQL, through real worker processes: a conversation started by a
replica on one "host" (its own state directory) continues on a replica on another, and a replica
that cannot reach the database does not start (and does not fall back to SQLite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import nats
import psycopg
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from agentd.bus import Message, Subjects, ensure_inbox_consumer, ensure_streams, ensure_trace_stream
from agentd.config import InboxConfig
from agentd.worker import CheckpointSettings, WorkerSettings, application_name, postgres_schema
from tests.checkpoints.postgres_server import PostgresServer
from tests.harness import REPO, TEST_AGENTS, free_port

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def start_worker(
    url: str, prefix: str, state_dir: Path, host: str, checkpoints: CheckpointSettings
) -> subprocess.Popen[bytes]:
    """`python -m agentd.worker --agent tally` as the daemon would spawn it on `host`."""
    settings = WorkerSettings(
        agent="tally",
        replica=f"tally-{host}",
        agent_dir=TEST_AGENTS / "tally",
        nats_url=url,
        prefix=prefix,
        state_dir=state_dir,
        checkpoints=checkpoints,
    )
    env = {**os.environ, **settings.to_env(), "TALLY_HOST": host, "PYTHONPATH": str(REPO)}
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / "worker.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agentd.worker", "--agent", "tally"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def prepare_bus(url: str) -> tuple[Client, JetStreamContext, Subjects]:
    """The streams and the inbox consumer the daemon would have created, under a fresh prefix."""
    subjects = Subjects(f"t{uuid.uuid4().hex[:10]}")
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js, subjects, InboxConfig())
    await ensure_trace_stream(js, subjects, max_bytes=2**24, max_age_s=600, duplicate_window_s=60)
    await ensure_inbox_consumer(js, subjects, "tally", ack_wait_s=30, max_deliver=3)
    return nc, js, subjects


async def ask(
    nc: Client, js: JetStreamContext, subjects: Subjects, conversation: str, items: list[str]
) -> dict[str, Any]:
    """Send `items` to tally in `conversation`; return the run's output."""
    token = uuid.uuid4().hex[:8]
    replies = await nc.subscribe(subjects.reply("tester", token), max_msgs=1)
    message = Message.model_validate(
        {
            "from": "tester",
            "to": "tally",
            "payload": {"items": items},
            "reply_to": subjects.reply("tester", token),
            "conversation_id": conversation,
        }
    )
    await js.publish(
        subjects.inbox("tally"), message.to_json(), headers={"Nats-Msg-Id": message.id}
    )
    reply = await replies.next_msg(timeout=30)
    result: dict[str, Any] = json.loads(reply.data)
    assert result["ok"], result
    output: dict[str, Any] = result["output"]
    return output


async def connections(postgres: PostgresServer, agent: str) -> int:
    """Open connections of `agent`'s checkpointers (pg_stat_activity)."""
    async with await psycopg.AsyncConnection.connect(postgres.admin_dsn) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (application_name(agent),),
        )
        row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def all_closed(postgres: PostgresServer, agent: str) -> bool:
    """Whether `agent`'s connections are gone: a backend ends a moment after its client
    closed, and there is no event to await, so a bounded poll."""
    with anyio.move_on_after(5):
        while await connections(postgres, agent):  # noqa: ASYNC110 (another process)
            await anyio.sleep(0.05)
        return True
    return False


async def stop(worker: subprocess.Popen[bytes]) -> int:
    worker.terminate()
    return await anyio.to_thread.run_sync(worker.wait, 20)


async def test_a_conversation_continues_on_another_host(
    nats_url: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    checkpoints = CheckpointSettings(backend="postgres", dsn=postgres.dsn(), connect_timeout_s=5)
    conversation, other = f"conv-{uuid.uuid4().hex[:8]}", f"conv-{uuid.uuid4().hex[:8]}"
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    nc, js, subjects = await prepare_bus(nats_url)
    worker = start_worker(nats_url, subjects.prefix, host_a, "host-a", checkpoints)
    try:
        first = await ask(nc, js, subjects, conversation, ["first"])
        assert first == {"items": ["first"], "hosts": ["host-a"]}
        assert await stop(worker) == 0  # drained: host A is gone
        assert await all_closed(postgres, "tally")  # its pool closed

        worker = start_worker(nats_url, subjects.prefix, host_b, "host-b", checkpoints)
        second = await ask(nc, js, subjects, conversation, ["second"])
        # host B sees what host A wrote: the state followed the conversation
        assert second == {"items": ["first", "second"], "hosts": ["host-a", "host-b"]}
        # another conversation on host B starts empty: state is per thread id
        fresh = await ask(nc, js, subjects, other, ["third"])
        assert fresh == {"items": ["third"], "hosts": ["host-b"]}
        assert await connections(postgres, "tally") >= 1  # host B's pool, under the agent's name
        assert await stop(worker) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        await nc.close()
    # nothing went to SQLite on either host
    assert not (host_a / "checkpoints").exists() and not (host_b / "checkpoints").exists()
    async with await psycopg.AsyncConnection.connect(postgres.admin_dsn) as conn:
        cursor = await conn.execute(
            f'SELECT DISTINCT thread_id FROM "{postgres_schema("tally")}".checkpoints'
        )
        threads = {row[0] for row in await cursor.fetchall()}
    assert {conversation, other} <= threads


async def test_a_replica_that_cannot_reach_postgres_does_not_start(
    nats_url: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    closed = free_port()  # nothing listens there
    dsn = f"postgresql://agentd:s3cret-pw@127.0.0.1:{closed}/agentd"
    checkpoints = CheckpointSettings(backend="postgres", dsn=dsn, connect_timeout_s=2)
    nc, _, subjects = await prepare_bus(nats_url)
    ready = await nc.subscribe(subjects.heartbeat("tally"), max_msgs=1)
    worker = start_worker(nats_url, subjects.prefix, tmp_path / "host", "host", checkpoints)
    try:
        code = await anyio.to_thread.run_sync(worker.wait, 30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    log = (tmp_path / "host" / "worker.log").read_text()
    assert code == 2, log
    assert "backend postgres" in log and f"127.0.0.1:{closed}/agentd" in log, log
    assert "does not fall back to SQLite" in log
    assert "s3cret-pw" not in log  # the password stays out of logs
    assert not (tmp_path / "host" / "checkpoints").exists()
    with pytest.raises(nats.errors.TimeoutError):  # it never said it was ready
        await ready.next_msg(timeout=0.2)
    await nc.close()


async def test_with_sqlite_the_state_stays_on_its_host(nats_url: str, tmp_path: Path) -> None:
    """The control: the default backend keeps a conversation on the host that ran it, so the
    same move loses the state (which is what PostgreSQL is for)."""
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    nc, js, subjects = await prepare_bus(nats_url)
    worker = start_worker(nats_url, subjects.prefix, host_a, "host-a", CheckpointSettings())
    try:
        assert await ask(nc, js, subjects, "conv", ["first"]) == {
            "items": ["first"],
            "hosts": ["host-a"],
        }
        assert await stop(worker) == 0
        worker = start_worker(nats_url, subjects.prefix, host_b, "host-b", CheckpointSettings())
        assert await ask(nc, js, subjects, "conv", ["second"]) == {
            "items": ["second"],
            "hosts": ["host-b"],
        }
        assert await stop(worker) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        await nc.close()
    assert (host_a / "checkpoints" / "tally" / "tally.sqlite").is_file()
    assert (host_b / "checkpoints" / "tally" / "tally.sqlite").is_file()
