"""Bearer tokens: which agent replica a request to the gateway comes from.

The daemon issues one token per agent replica when it spawns it (AGENTD_LLM_TOKEN in the
replica's environment) and revokes it when the replica exits; a token nobody issued is refused.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

__all__ = ["TokenBook", "TokenHolder"]


@dataclass(frozen=True)
class TokenHolder:
    """Whom a token was issued to."""

    agent: str
    replica: str


class TokenBook:
    """Tokens in memory: they live no longer than the daemon that issued them."""

    def __init__(self) -> None:
        self._holders: dict[str, TokenHolder] = {}
        self._by_replica: dict[str, str] = {}

    def issue(self, agent: str, replica: str) -> str:
        """A fresh token for `replica` of `agent`; a replica's earlier token is revoked."""
        self.revoke(replica)
        token = "agentd-" + secrets.token_urlsafe(32)
        self._holders[token] = TokenHolder(agent, replica)
        self._by_replica[replica] = token
        return token

    def revoke(self, replica: str) -> bool:
        """Revoke `replica`'s token; False when it held none."""
        token = self._by_replica.pop(replica, None)
        if token is None:
            return False
        self._holders.pop(token, None)
        return True

    def revoke_agent(self, agent: str) -> None:
        """Revoke every token held by `agent`'s replicas (its identity was revoked or its lease
        lapsed)."""
        tokens = [token for token, holder in self._holders.items() if holder.agent == agent]
        for token in tokens:
            holder = self._holders.pop(token)
            self._by_replica.pop(holder.replica, None)

    def holder(self, token: str) -> TokenHolder | None:
        """Who holds `token`, or None for a token not (or no longer) issued."""
        return self._holders.get(token)
