"""What each kind of identity may publish and subscribe to on NATS (DESIGN.md, Subjects).

The subject is the identity: a replica of `A` may publish only under its own name, so the
daemon can trust `<agent>` in `agentd.out.<agent>.*`, `agentd.tool.<agent>.*`,
`agentd.trace.<agent>`, `agentd.hb.<agent>` and `agentd.spawn.<agent>`. Reading an inbox goes
through its durable consumer, which NATS governs by publish rights on the consumer's
`$JS.API.CONSUMER.MSG.NEXT` and `$JS.ACK` subjects. Replies come back on an inbox prefix only
that identity may subscribe to, so no client reads another's replies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from agentd.bus import Subjects

__all__ = [
    "Permissions",
    "agent_inbox_prefix",
    "agent_permissions",
    "bootstrap_permissions",
    "operator_inbox_prefix",
    "operator_permissions",
    "probe_permissions",
]


@dataclass(frozen=True)
class Permissions:
    """Allow lists (everything else is denied) in NATS's permission model."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    def render(self) -> str:
        """The `permissions { ... }` block of a nats-server user."""
        pub = json.dumps(list(self.publish) or ["_agentd.nothing"])
        sub = json.dumps(list(self.subscribe) or ["_agentd.nothing"])
        return f"{{publish: {{allow: {pub}}}, subscribe: {{allow: {sub}}}}}"


def agent_inbox_prefix(agent: str) -> str:
    return f"_INBOX_a_{agent}"


def operator_inbox_prefix(operator: str) -> str:
    return f"_INBOX_o_{operator}"


BOOTSTRAP_INBOX_PREFIX = "_INBOX_bootstrap"


def agent_permissions(subjects: Subjects, agent: str, *, external: bool = False) -> Permissions:
    """A replica of `agent` (or a registered external agent of that name)."""
    p = subjects.prefix
    stream = subjects.inbox_stream
    consumer = subjects.inbox_consumer(agent)
    runs = subjects.runs_bucket
    publish = [
        f"{p}.out.{agent}.*",
        f"{p}.tool.{agent}.>",
        f"{p}.trace.{agent}",
        f"{p}.hb.{agent}",
        f"{p}.spawn.{agent}",
        f"{p}.dlq.{agent}",
        # a run's result goes to whoever asked: reply subjects are random tokens under the
        # asker's name, which the router requires (see docs/identity.md)
        f"{p}.reply.>",
        # its own inbox consumer: fetch, acks, and reading its settings
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
        f"$JS.API.STREAM.INFO.{stream}",
        # the run ledger: its own finished runs and conversation leases
        f"$JS.API.STREAM.INFO.KV_{runs}",
        f"$KV.{runs}.run.{agent}.>",
        f"$KV.{runs}.lease.{agent}.>",
        f"$JS.API.DIRECT.GET.KV_{runs}.$KV.{runs}.run.{agent}.>",
        f"$JS.API.DIRECT.GET.KV_{runs}.$KV.{runs}.lease.{agent}.>",
    ]
    if external:
        publish += [f"{p}.api.{verb}.{agent}" for verb in ("register", "heartbeat", "deregister")]
    subscribe = [
        f"{agent_inbox_prefix(agent)}.>",
        f"{p}.reply.{agent}.>",
        f"{p}.cmd.{agent}",
    ]
    return Permissions(tuple(publish), tuple(subscribe))


def operator_permissions(subjects: Subjects, operator: str) -> Permissions:
    """An operator's console: control requests (signed; the daemon checks the role in policy),
    replies on its own inbox, run results it asked for, and lifecycle events."""
    p = subjects.prefix
    return Permissions(
        publish=(f"{p}.ctl.>",),
        subscribe=(f"{operator_inbox_prefix(operator)}.>", f"{p}.reply.>", f"{p}.evt.>"),
    )


def bootstrap_permissions(subjects: Subjects) -> Permissions:
    """Whoever holds the bootstrap token: ask to register, and hear the answer."""
    return Permissions(
        publish=(f"{subjects.prefix}.api.register",),
        subscribe=(f"{BOOTSTRAP_INBOX_PREFIX}.>",),
    )


def probe_permissions() -> Permissions:
    """The daemon's reload probe: may connect, nothing else."""
    return Permissions()
