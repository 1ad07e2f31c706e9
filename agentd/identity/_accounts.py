"""NATS accounts: the daemon's streams live where no agent can address their API.

Subject permissions cannot scope the JetStream API: NATS does not check a message's reply
subject against the publisher's permissions, so an agent could send a pull request (or a
message nobody answers) with the reply subject `$JS.API.STREAM.PURGE.<stream>` and the server's
own status message would purge that stream. Accounts can: every identity gets an account of
its own, without JetStream, that imports from the daemon's account (`AGENTD`) exactly the
subjects that identity may use. A request that crosses an import has its reply subject mapped
back into the importing account, so whatever the server answers lands in the sender's own
account, where no stream exists to act on.

Each import is also the sender's only way into `AGENTD`, so a subject like
`agentd.out.<agent>.<to>` can arrive there from `<agent>`'s account alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from agentd.bus import Subjects

__all__ = [
    "DAEMON_ACCOUNT",
    "Import",
    "account_name",
    "agent_imports",
    "bootstrap_imports",
    "operator_imports",
    "render_accounts",
]

DAEMON_ACCOUNT = "AGENTD"


@dataclass(frozen=True)
class Import:
    """One subject an identity's account takes from the daemon's account.

    A `service` carries the identity's publishes (and requests) into `AGENTD`; a `stream`
    carries the daemon's publishes on `subject` out to the identity, where they appear as
    `local` (the same subject unless given)."""

    kind: Literal["service", "stream"]
    subject: str
    local: str | None = None
    # a pull request is answered by a stream of messages, not one reply
    response: Literal["singleton", "stream"] = "singleton"

    @property
    def seen_as(self) -> str:
        return self.local or self.subject

    def render(self) -> str:
        source = json.dumps({"account": DAEMON_ACCOUNT, "subject": self.subject})
        to = f", to: {json.dumps(self.local)}" if self.local else ""
        return f"{{{self.kind}: {source}{to}}}"


def account_name(identity: str) -> str:
    """`agent:echo` -> `A_echo`, `operator:local` -> `O_local`; others in capitals."""
    kind, _, name = identity.partition(":")
    if kind == "agent":
        return f"A_{name}"
    if kind == "operator":
        return f"O_{name}"
    return identity.upper()


def agent_imports(subjects: Subjects, agent: str, *, external: bool = False) -> list[Import]:
    """What a replica of `agent` (or a registered external agent of that name) may use."""
    p = subjects.prefix
    stream = subjects.inbox_stream
    consumer = subjects.inbox_consumer(agent)
    runs = subjects.runs_bucket
    services = [
        subjects.out(agent, "*"),
        f"{p}.tool.{agent}.>",
        subjects.tool_catalog(agent),  # its own catalog of tools, nobody else's
        subjects.trace(agent),
        subjects.heartbeat(agent),
        subjects.spawn(agent),
        subjects.dead_letter_request(agent),
        # a run's result goes to whoever asked; the daemon relays it (reply subjects end in a
        # random token only the asker knows; see docs/identity.md)
        f"{p}.reply.>",
        # its own inbox consumer's acks (the JetStream API proper, `$JS.API.CONSUMER.INFO` and
        # the like, is answered in every account by the account's own JetStream, which agents'
        # accounts do not have: the daemon tells a replica its inbox's settings)
        f"$JS.ACK.{stream}.{consumer}.>",
        # the run ledger: its own finished runs and conversation leases, nothing else of the
        # bucket (no stream info: that would list every agent's keys)
        f"$KV.{runs}.run.{agent}.>",
        f"$KV.{runs}.lease.{agent}.>",
        f"$JS.API.DIRECT.GET.KV_{runs}.$KV.{runs}.run.{agent}.>",
        f"$JS.API.DIRECT.GET.KV_{runs}.$KV.{runs}.lease.{agent}.>",
    ]
    if external:
        services += [f"{p}.api.{verb}.{agent}" for verb in ("register", "heartbeat", "deregister")]
    return [
        Import("service", f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", response="stream"),
        *(Import("service", s) for s in services),
        Import("stream", subjects.command(agent)),
        Import("stream", subjects.delivered(agent, ">"), local=subjects.reply(agent, ">")),
    ]


def operator_imports(subjects: Subjects) -> list[Import]:
    """An operator's console: control requests, the replies of `send --wait`, live events."""
    owner = subjects.operator_reply_owner
    return [
        Import("service", subjects.ctl_all),
        Import("stream", subjects.delivered(owner, ">"), local=subjects.reply(owner, ">")),
        Import("stream", subjects.event(">")),
    ]


def bootstrap_imports(subjects: Subjects) -> list[Import]:
    """Whoever holds the bootstrap token: the registration request, nothing else."""
    return [Import("service", f"{subjects.prefix}.api.register")]


@dataclass(frozen=True)
class _Account:
    name: str
    users: tuple[str, ...]
    imports: tuple[Import, ...]


def render_accounts(
    daemon_user: str, accounts: Iterable[tuple[str, list[str], list[Import]]]
) -> str:
    """nats-server's `accounts` block: `AGENTD` (JetStream, the daemon's user with full rights,
    an export for every import below, each to exactly the accounts that import it) and one
    account per `(name, users, imports)`."""
    others = [_Account(name, tuple(users), tuple(imports)) for name, users, imports in accounts]
    exports: dict[tuple[str, str, str], list[str]] = {}
    for account in others:
        for i in account.imports:
            exports.setdefault((i.kind, i.subject, i.response), []).append(account.name)
    lines = [
        "accounts {",
        f"  {DAEMON_ACCOUNT}: {{",
        "    jetstream: enabled",
        f"    users: [{daemon_user}]",
        "    exports: [",
    ]
    for (kind, subject, response), names in sorted(exports.items()):
        extra = f", response_type: {response}" if response != "singleton" else ""
        lines.append(
            f"      {{{kind}: {json.dumps(subject)}, accounts: {json.dumps(sorted(names))}{extra}}}"
        )
    lines += ["    ]", "  }"]
    for account in others:
        lines.append(f"  {json.dumps(account.name)}: {{")
        lines.append("    users: [")
        lines += [f"      {user}" for user in account.users]
        lines.append("    ]")
        lines.append("    imports: [")
        lines += [f"      {i.render()}" for i in account.imports]
        lines.append("    ]")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
