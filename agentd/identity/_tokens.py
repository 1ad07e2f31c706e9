"""LLM-gateway tokens for identities: the seam between identity and the gateway.

The daemon issues a bearer token when an agent gets an identity and revokes it with the
identity. The gateway owns the real book (token -> agent, checked on every call); until it is
connected, `MemoryTokenBook` is that book, and the contract its tests pin down: a revoked
token stops resolving at once.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Protocol

__all__ = ["MemoryTokenBook", "TokenBook"]


class TokenBook(Protocol):
    """What the identity side needs from the LLM gateway's token book."""

    def issue(self, agent: str) -> str:
        """A bearer token for `agent` (a new one replaces its old one)."""
        ...

    def revoke(self, agent: str) -> None:
        """Refuse `agent`'s tokens from now on."""
        ...

    def agent_for(self, token: str) -> str | None:
        """The agent a token belongs to, or None (unknown or revoked)."""
        ...


class MemoryTokenBook:
    """An in-process TokenBook: tokens live as long as the daemon."""

    def __init__(self) -> None:
        self._by_agent: dict[str, str] = {}

    def issue(self, agent: str) -> str:
        token = "agt_" + secrets.token_urlsafe(32)
        self._by_agent[agent] = token
        return token

    def revoke(self, agent: str) -> None:
        self._by_agent.pop(agent, None)

    def agent_for(self, token: str) -> str | None:
        for agent, known in self._by_agent.items():
            if hmac.compare_digest(known, token):
                return agent
        return None

    def token_of(self, agent: str) -> str | None:
        return self._by_agent.get(agent)
