"""JetStream streams and consumers for agent inboxes, dead letters and decision records."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from agentd.bus._subjects import Subjects

if TYPE_CHECKING:  # a type only: importing the config models costs agentctl's start
    from agentd.config import InboxConfig

__all__ = [
    "ensure_inbox_consumer",
    "ensure_streams",
    "ensure_trace_consumer",
    "ensure_trace_stream",
]


async def ensure_streams(
    js: JetStreamContext, subjects: Subjects, cfg: InboxConfig, *, replicas: int = 1
) -> None:
    """Create or update the inbox and dead-letter streams and the runs bucket (idempotent).

    `replicas` is JetStream's replication factor: 1 on one host, 3 on a three-node cluster (a
    message survives the loss of one NATS node)."""
    inbox = StreamConfig(
        name=subjects.inbox_stream,
        subjects=[subjects.inbox_all],
        # work-queue semantics per consumer: a message is gone once its run has been acked
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=cfg.max_age_s,
        duplicate_window=cfg.duplicate_window_s,
        num_replicas=replicas,
    )
    dead = StreamConfig(
        name=subjects.dead_letter_stream,
        subjects=[subjects.dead_letter_all],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=30 * 24 * 3600.0,
        num_replicas=replicas,
    )
    for config in (inbox, dead):
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
    ledger_stream = f"KV_{subjects.runs_bucket}"
    try:
        ledger = (await js.stream_info(ledger_stream)).config
    except NotFoundError:
        await js.create_key_value(
            KeyValueConfig(
                bucket=subjects.runs_bucket,
                description="finished runs by message id",
                # longer than any redelivery can arrive: the inbox's own retention
                ttl=cfg.max_age_s,
                max_value_size=2 << 20,
                storage=StorageType.FILE,
                direct=True,
                replicas=replicas,
            )
        )
        ledger = (await js.stream_info(ledger_stream)).config
    # replicas write their own keys of this bucket; a `Nats-Rollup: all` header on such a
    # write would purge every agent's entries. Nothing here needs rollups (no KV purge).
    if ledger.allow_rollup_hdrs or ledger.max_age != cfg.max_age_s:
        ledger.allow_rollup_hdrs = False
        ledger.max_age = cfg.max_age_s
        await js.update_stream(ledger)


async def ensure_inbox_consumer(
    js: JetStreamContext, subjects: Subjects, agent: str, *, ack_wait_s: float, max_deliver: int
) -> str:
    """The durable pull consumer all replicas of `agent` share; returns its name."""
    name = subjects.inbox_consumer(agent)
    config = ConsumerConfig(
        durable_name=name,
        filter_subject=subjects.inbox(agent),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=10_000,
    )
    await js.add_consumer(subjects.inbox_stream, config)
    return name


async def ensure_trace_stream(
    js: JetStreamContext,
    subjects: Subjects,
    *,
    max_bytes: int,
    max_age_s: float,
    duplicate_window_s: float,
    replicas: int = 1,
) -> None:
    """Create or update the stream of decision records on `<prefix>.trace.*` (idempotent).

    Work-queue retention: a record is removed once the daemon acked it (after the log committed
    it), so the stream holds only the backlog and `max_bytes` bounds that backlog. When it is
    full, publishes are refused (discard new) and publishers retry: a full stream slows workers
    down, it never drops a record silently. The duplicate window drops a republished record id
    (publishers set Nats-Msg-Id to it); the log drops any later duplicate by id.
    """
    config = StreamConfig(
        name=subjects.trace_stream,
        subjects=[subjects.trace_all],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=max_bytes,
        max_age=max_age_s,
        duplicate_window=duplicate_window_s,
        num_replicas=replicas,
    )
    try:
        await js.stream_info(subjects.trace_stream)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


async def ensure_trace_consumer(
    js: JetStreamContext, subjects: Subjects, *, ack_wait_s: float, max_ack_pending: int
) -> str:
    """The daemon's durable pull consumer on the trace stream; returns its name.

    Explicit acks, one per message, sent after the batch holding it committed. AckAll would
    send one ack per batch, but it also settles every *older* message still pending, and after
    a crash those are the ones delivered to the dead process and not yet redelivered: acking
    a fresh batch would settle them unwritten. An ack is one small publish, cheap next to a
    record's write.
    """
    name = subjects.trace_consumer
    config = ConsumerConfig(
        durable_name=name,
        filter_subject=subjects.trace_all,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending,
    )
    await js.add_consumer(subjects.trace_stream, config)
    return name
