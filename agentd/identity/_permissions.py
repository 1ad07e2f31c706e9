"""What each kind of identity may publish and subscribe to inside its own NATS account.

The account's imports (agentd.identity._accounts) are the boundary: they decide what reaches
the daemon's account at all. These allow lists say the same thing to the user inside the
account: publish only what the account imports as services (so a replica of `A` speaks only
under its own name: `agentd.out.A.*`, `agentd.tool.A.>`, `agentd.trace.A`, ...), subscribe
only to its streams and its own reply inbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from agentd.bus import Subjects
from agentd.identity._accounts import Import, agent_imports, bootstrap_imports, operator_imports

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


def _within(imports: list[Import], inbox_prefix: str | None) -> Permissions:
    """A user's allow lists inside its own account: publish what its account imports as
    services, subscribe to what it imports as streams and to its own reply inbox."""
    publish = [i.seen_as for i in imports if i.kind == "service"]
    subscribe = [f"{inbox_prefix}.>"] if inbox_prefix else []
    subscribe += [i.seen_as for i in imports if i.kind == "stream"]
    return Permissions(tuple(publish), tuple(subscribe))


def agent_permissions(subjects: Subjects, agent: str, *, external: bool = False) -> Permissions:
    """A replica of `agent` (or a registered external agent of that name)."""
    return _within(agent_imports(subjects, agent, external=external), agent_inbox_prefix(agent))


def operator_permissions(subjects: Subjects, operator: str) -> Permissions:
    """An operator's console: control requests (signed; the daemon checks the role in policy),
    replies on its own inbox, run results it asked for, and lifecycle events."""
    return _within(operator_imports(subjects), operator_inbox_prefix(operator))


def bootstrap_permissions(subjects: Subjects) -> Permissions:
    """Whoever holds the bootstrap token: ask to register, and hear the answer."""
    return _within(bootstrap_imports(subjects), BOOTSTRAP_INBOX_PREFIX)


def probe_permissions() -> Permissions:
    """The daemon's reload probe: may connect, nothing else."""
    return Permissions()
