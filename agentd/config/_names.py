"""Names an agent (configured, spawned or registered from outside) may not take.

The daemon and agentctl use these words themselves as subject tokens or identity names:
`agentd.<word>.…` subjects (`ctl`, `api`, `out`, `in`, `tool`, `trace`, `hb`, `cmd`, `spawn`,
`dlq`, `reply`, `evt`), agentctl's reply owner (`agentd.reply.ctl.<id>`: an agent named `ctl`
could read operators' `send --wait` replies), the server users (`daemon`, `bootstrap`,
`probe`) and the operators' default names (`local`, `operator`). An agent of such a name would
share a subject or an identity with the daemon or its operators.
"""

from __future__ import annotations

__all__ = ["RESERVED_NAMES", "reserved_name_problem"]

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
