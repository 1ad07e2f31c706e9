"""The daemon's taint state: what taints what, for how long, and that a restarted daemon (a new
TaintBook on the same bucket, as another host of a cluster would have) knows it too."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import nats
import pytest

from agentd.tools import Taint, TaintBook

pytestmark = pytest.mark.anyio

ORIGIN = Taint("rec-1", "http.fetch", "reader", 0.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running(url: str, bucket: str, window_s: float = 60.0) -> AsyncIterator[TaintBook]:
    nc = await nats.connect(url)
    book = TaintBook(window_of=lambda agent: window_s, ttl_s=3600)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: book.run(nc.jetstream(), bucket, task_status=task_status)
            )
            yield book
            await book.shutdown()
    finally:
        await nc.close()


async def test_a_received_taint_marks_conversation_message_and_agent(nats_url: str) -> None:
    async with running(nats_url, "taint_a") as book:
        assert book.of_call("reader", "conv-1", "msg-1") is None
        await book.taint_received(ORIGIN, "conv-1", "msg-1")
        assert book.of_call("reader", "conv-1", "msg-1") == ORIGIN
        # another conversation and message of the same agent: the agent window
        assert book.of_call("reader", "conv-2", "msg-2") == ORIGIN
        assert book.of_sender("reader", "conv-9") == ORIGIN
        # another agent is not tainted by it
        assert book.of_call("writer", "conv-1", "msg-1") is None


async def test_without_a_window_only_the_conversation_and_message_are_tainted(
    nats_url: str,
) -> None:
    async with running(nats_url, "taint_b", window_s=0) as book:
        await book.taint_received(ORIGIN, "conv-1", "msg-1")
        assert book.of_call("reader", "conv-1", None) == ORIGIN
        assert book.of_call("reader", None, "msg-1") == ORIGIN
        assert book.of_call("reader", "conv-2", "msg-2") is None


async def test_a_delivery_taints_the_recipient_and_keeps_the_origin(nats_url: str) -> None:
    async with running(nats_url, "taint_c") as book:
        await book.taint_delivered("approver", "conv-1", "msg-7", ORIGIN)
        found = book.of_call("approver", "conv-2", None)  # the agent window: any conversation
        assert found == ORIGIN and found.agent == "reader"
        # the window answers with the latest taint
        later = Taint("rec-2", "mail.read", "approver", time.time())
        await book.taint_received(later, "conv-1", "msg-8")
        assert book.of_call("approver", "conv-2", None) == later
    async with running(nats_url, "taint_c2", window_s=0) as book:
        await book.taint_delivered("approver", "conv-1", "msg-7", ORIGIN)
        await book.taint_received(later, "conv-1", "msg-8")
        # a conversation keeps the taint that came first: its origin
        assert book.of_call("approver", "conv-1", None) == ORIGIN
        assert book.of_call("approver", None, "msg-8") == later


async def test_a_restarted_daemon_knows_the_taint(nats_url: str) -> None:
    async with running(nats_url, "taint_d") as book:
        await book.taint_received(ORIGIN, "conv-1", "msg-1")
    async with running(nats_url, "taint_d", window_s=0) as again:
        assert again.of_call("reader", "conv-1", None) == ORIGIN
        assert again.of_call("reader", "conv-5", "msg-5") == ORIGIN  # the stored window holds


async def test_another_book_on_the_bucket_follows_new_taints(nats_url: str) -> None:
    async with running(nats_url, "taint_e") as one, running(nats_url, "taint_e") as other:
        await one.taint_received(ORIGIN, "conv-1", "msg-1")
        with anyio.fail_after(5):
            while other.of_call("reader", "conv-1", None) is None:  # noqa: ASYNC110 (its watcher)
                await anyio.sleep(0.01)
        assert other.of_call("reader", "conv-1", None) == ORIGIN


async def test_an_agent_window_ends(nats_url: str) -> None:
    async with running(nats_url, "taint_f", window_s=0.2) as book:
        await book.taint_received(ORIGIN, "conv-1", "msg-1")
        assert book.of_call("reader", "conv-2", None) == ORIGIN
        await anyio.sleep(0.3)
        assert book.of_call("reader", "conv-2", None) is None
        assert book.of_call("reader", "conv-1", None) == ORIGIN  # the conversation keeps it


async def test_a_reply_from_a_tainted_run_taints_the_asker_once(nats_url: str) -> None:
    async with running(nats_url, "taint_g", window_s=0) as book:
        book.expect_reply(
            "agentd.reply.asker.t1", asker="asker", answerer="teller", conversation_id="c"
        )
        book.expect_reply(
            "agentd.reply.asker.t2", asker="asker", answerer="clean", conversation_id="d"
        )
        await book.taint_received(Taint("rec-9", "http.fetch", "teller", 0.0), "c", "m")
        assert await book.taint_reply("agentd.reply.asker.t2") is None  # clean answerer
        assert book.of_call("asker", "d", None) is None
        found = await book.taint_reply("agentd.reply.asker.t1")
        assert found is not None and found.record_id == "rec-9"
        assert book.of_call("asker", "c", None) == found
        assert await book.taint_reply("agentd.reply.asker.t1") is None  # one reply per ask
        assert await book.taint_reply("agentd.reply.asker.unknown") is None


async def test_a_spawned_instance_of_a_tainted_agent_is_tainted_for_the_ttl(nats_url: str) -> None:
    async with running(nats_url, "taint_h", window_s=0.1) as book:
        await book.taint_spawned("child-s1", ORIGIN)
        await anyio.sleep(0.2)  # past the ordinary window
        assert book.of_call("child-s1", "any", "thing") == ORIGIN
