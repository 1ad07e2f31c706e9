"""Every call carries an idempotency key (message id + call id): a rerun of a message gets the
stored result instead of a second side effect, including after a worker dies mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import nats
import pytest

from agentd.bus import Message, Subjects, ensure_inbox_consumer, ensure_streams, ensure_trace_stream
from agentd.config import InboxConfig, ToolsConfig
from agentd.policy import DecisionPoint
from agentd.tools import ResultStore
from agentd.tools._results import ensure_results_bucket
from agentd.worker import ToolCallFailed, WorkerSettings
from tests.harness import REPO, TEST_AGENTS

from .support import EXAMPLE_POLICY, in_run, ledger_lines, running_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

LOAN = {"applicant_id": "A-1001", "amount": 5000, "payee": "acct-1001"}


async def test_the_same_call_twice_runs_once_and_the_second_is_replayed(
    nats_url: str, ledger: Path
) -> None:
    async with running_gateway(nats_url, point=DecisionPoint.from_dir(EXAMPLE_POLICY)) as env:
        ctx = env.context("underwriter")
        with in_run(ctx, "message-1") as first:
            paid = await ctx.call_tool("loan.approve", LOAN)
        with in_run(ctx, "message-1") as rerun:  # redelivered: a new run of the same message
            again = await ctx.call_tool("loan.approve", LOAN)
        assert rerun.run_id != first.run_id
        assert again == paid
        body = {"args": LOAN, "message_id": "message-1", "call_id": "c1", "run_id": "r-3"}
        answer = await env.raw_call("underwriter", "loan.approve", body)
        assert answer == {"ok": True, "result": paid, "replayed": True}
        # another message, or another agent with the same ids, is another call
        with in_run(ctx, "message-2"):
            await ctx.call_tool("loan.approve", LOAN)
        decisions = [r["decision"] for r in env.records.of("tool.executed")]
        assert decisions == ["ok", "replayed", "replayed", "ok"]
        replayed = env.records.of("tool.executed")[1]
        assert first.run_id in replayed["reason"]
    assert len(ledger_lines(ledger)) == 2  # message-1 once, message-2 once


async def test_concurrent_copies_of_a_call_run_once(nats_url: str, ledger: Path) -> None:
    answers: list[dict[str, Any]] = []
    async with running_gateway(nats_url, point=DecisionPoint.from_dir(EXAMPLE_POLICY)) as env:
        body = {"args": LOAN, "message_id": "m-9", "call_id": "c1"}

        async def call() -> None:
            answers.append(await env.raw_call("underwriter", "loan.approve", body))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(call)
    assert len(ledger_lines(ledger)) == 1
    assert all(a["ok"] for a in answers)
    assert len({json.dumps(a["result"]) for a in answers}) == 1
    assert sorted(a["replayed"] for a in answers) == [False, True, True, True, True]


async def test_a_failed_call_may_run_again(nats_url: str, tmp_path: Path) -> None:
    tools_dir = tmp_path / "tools"
    tools_dir.mkdir()
    count = tmp_path / "attempts"
    (tools_dir / "flaky.py").write_text(
        "from pathlib import Path\n"
        "from agentd.tools import tool\n\n"
        '@tool("flaky.pay")\n'
        "def pay(counter: str) -> int:\n"
        "    path = Path(counter)\n"
        "    n = int(path.read_text()) + 1 if path.exists() else 1\n"
        "    path.write_text(str(n))\n"
        "    if n == 1:\n"
        '        raise ConnectionError("the bank did not answer")\n'
        "    return n\n"
    )
    async with running_gateway(
        nats_url, point=None, tools_dir=tools_dir, agent_tools={"ops": ["flaky.pay"]}
    ) as env:
        ctx = env.context("ops")
        with in_run(ctx, "m-1"), pytest.raises(ToolCallFailed) as failed:
            await ctx.call_tool("flaky.pay", {"counter": str(count)})
        with in_run(ctx, "m-1"):
            second = await ctx.call_tool("flaky.pay", {"counter": str(count)})
        with in_run(ctx, "m-1"):
            third = await ctx.call_tool("flaky.pay", {"counter": str(count)})
    assert "ConnectionError: the bank did not answer" in str(failed.value)
    assert (second, third) == (2, 2)  # the failure released the key; the success is kept
    assert count.read_text() == "2"


async def test_claims_across_gateways(nats_url: str) -> None:
    """Two gateways (hosts) with one call: the second waits for the first's result; a claim
    whose holder died expires and is taken over."""
    nc = await nats.connect(nats_url)
    try:
        kv = await ensure_results_bucket(nc.jetstream(), f"t{uuid.uuid4().hex[:8]}_results", 60)
        here, there = ResultStore(kv), ResultStore(kv)
        key = ResultStore.key("underwriter", "m-1", "c1")
        claim = {"tool": "loan.approve", "args_digest": "d", "run_id": "r-1"}
        revision, done = await here.claim(key, **claim, hold_s=30)
        assert revision is not None and done is None
        waited: list[Any] = []
        started = anyio.Event()

        async def second_copy() -> None:
            started.set()
            waited.append(await there.claim(key, **{**claim, "run_id": "r-2"}, hold_s=30))

        async with anyio.create_task_group() as tg:
            tg.start_soon(second_copy)
            await started.wait()
            await anyio.sleep(0.3)  # the second copy has been in claim() a while: it waits
            assert waited == []
            record, ours = await here.complete(key, revision, **claim, result={"paid": 1})
            assert ours
        [(no_revision, finished)] = waited
        assert no_revision is None and finished is not None
        assert (finished.state, finished.result, finished.run_id) == ("done", {"paid": 1}, "r-1")

        dead = ResultStore.key("underwriter", "m-2", "c1")
        assert (await here.claim(dead, **claim, hold_s=0.05))[0] is not None
        await anyio.sleep(0.1)  # past the dead holder's claim
        taken, _ = await there.claim(dead, **claim, hold_s=30)
        assert taken is not None
        assert (await there.get(dead)) is not None
    finally:
        await nc.close()


async def test_the_results_bucket_follows_the_configured_ttl(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js, bucket = nc.jetstream(), f"t{uuid.uuid4().hex[:8]}_results"
        kv = await ensure_results_bucket(js, bucket, 60)
        await kv.put("call.kept", b"{}")
        kv = await ensure_results_bucket(js, bucket, 120)  # [tools].results_ttl_s changed
        assert (await kv.status()).ttl == 120
        assert (await kv.get("call.kept")).value == b"{}"
    finally:
        await nc.close()


def _worker(url: str, prefix: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    settings = WorkerSettings(
        agent="underwriter",
        replica="underwriter-0",
        agent_dir=TEST_AGENTS / "toolcaller",
        nats_url=url,
        prefix=prefix,
    )
    full_env = {**os.environ, **settings.to_env(), **env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "agentd.worker", "--agent", "underwriter"],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_a_redelivered_run_does_not_pay_twice(
    nats_url: str, ledger: Path, tmp_path: Path
) -> None:
    """A real worker pays, then dies before its run is acked; JetStream redelivers the message
    to a new replica, whose rerun gets the stored receipt: the ledger holds one payment."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    subjects = Subjects(prefix)
    marker = tmp_path / "crashed"
    env = {"AGENTD_TOOL_TIMEOUT_S": "20"}
    nc = await nats.connect(nats_url)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        js = nc.jetstream()
        await ensure_streams(js, subjects, InboxConfig(ack_wait_s=1.0))
        # where the worker's run records go (the daemon's trace ingest creates it)
        await ensure_trace_stream(
            js, subjects, max_bytes=2**24, max_age_s=600, duplicate_window_s=60
        )
        await ensure_inbox_consumer(js, subjects, "underwriter", ack_wait_s=1.0, max_deliver=5)
        config = ToolsConfig(call_timeout_s=10)
        point = DecisionPoint.from_dir(EXAMPLE_POLICY)
        async with running_gateway(nats_url, point=point, prefix=prefix, config=config) as gw:
            replies = await nc.subscribe(subjects.reply("tester", "1"), max_msgs=1)
            payload = {**LOAN, "crash_marker": str(marker)}
            message = Message.model_validate(
                {
                    "from": "tester",
                    "to": "underwriter",
                    "payload": payload,
                    "reply_to": subjects.reply("tester", "1"),
                }
            )
            await js.publish(
                subjects.inbox("underwriter"),
                message.to_json(),
                headers={"Nats-Msg-Id": message.id},
            )
            workers.append(_worker(nats_url, prefix, env))
            code = await anyio.to_thread.run_sync(workers[0].wait, 30)
            assert code == 17 and marker.exists()  # it paid, then died mid-run
            assert len(ledger_lines(ledger)) == 1

            started = time.monotonic()
            workers.append(_worker(nats_url, prefix, env))
            msg = await replies.next_msg(timeout=30)
            result = json.loads(msg.data)
            assert result["ok"], result
            assert time.monotonic() - started < 25
            paid = json.loads(ledger_lines(ledger)[0])
            assert result["output"]["confirmation"] == paid["confirmation"]
            assert result["output"]["pid"] == workers[1].pid
            executed = gw.records.of("tool.executed")
            assert [r["decision"] for r in executed] == ["ok", "replayed"]
            assert executed[0]["run_id"] != executed[1]["run_id"]  # two runs, one payment
            assert {r["attributes"]["message_id"] for r in executed} == {message.id}
        assert len(ledger_lines(ledger)) == 1
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(15)
        await nc.close()
