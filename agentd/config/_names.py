"""What a name may look like, and the names an agent (configured, spawned or registered from
outside) may not take.

`IDENTITY_NAME` is the one rule for agents', operators' and external clients' names (they become
subject tokens and NATS identities); `TOOL_NAME` the one rule for tool names (dot-separated
tokens: `loan.approve`, `mcp-server.tool`), shared by the tool gateway, the worker's tool proxy
and the MCP mount and endpoint.

The daemon and agentctl use these words themselves as subject tokens or identity names:
`agentd.<word>.…` subjects (`ctl`, `api`, `out`, `in`, `tool`, `trace`, `hb`, `cmd`, `spawn`,
`dlq`, `reply`, `evt`), agentctl's reply owner (`agentd.reply.ctl.<id>`: an agent named `ctl`
could read operators' `send --wait` replies), the server users (`daemon`, `bootstrap`,
`probe`) and the operators' default names (`local`, `operator`). An agent of such a name would
share a subject or an identity with the daemon or its operators.
"""

from __future__ import annotations

import re

__all__ = [
    "EXTERNAL_SUBJECT_PREFIX",
    "IDENTITY_NAME",
    "RESERVED_NAMES",
    "TOOL_NAME",
    "external_subject",
    "reserved_name_problem",
]

IDENTITY_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")

RESERVED_NAMES: frozenset[str] = frozenset(
    {
        # subject tokens under the prefix (agentd.bus.Subjects)
        "ctl", "api", "out", "in", "tool", "trace", "hb", "cmd", "spawn", "dlq", "reply", "evt",
        # identities and owners the daemon and agentctl use
        "daemon", "bootstrap", "probe", "local", "operator", "agentctl", "agentd", "router",
        "gateway", "all", "system",
    }
)  # fmt: skip


def reserved_name_problem(name: str) -> str | None:
    """Why `name` may not be an agent's name, or None when it may."""
    if name in RESERVED_NAMES:
        return (
            f"{name!r} is reserved: agentd uses it in its own subjects or identities "
            f"(reserved: {', '.join(sorted(RESERVED_NAMES))})"
        )
    return None


EXTERNAL_SUBJECT_PREFIX = "ext:"
"""Policy subjects of clients from outside: a registered external agent, an outside token."""


def external_subject(name: str) -> str:
    """The policy subject of outside client `name` (a registered agent, an outside LLM-gateway
    token), the same at every enforcement point: registration, the LLM gateway, the tool
    gateway and the router. A replica's subject is its bare agent name, and an agent name
    cannot hold a colon (`AGENT_NAME`), so no replica, not even one named `ext`, can be
    `ext:<name>`: outside clients and replicas never share grants, budgets or limits."""
    if ":" in name:
        raise ValueError(f"an outside client's name cannot hold a colon: {name!r}")
    return EXTERNAL_SUBJECT_PREFIX + name
