"""Identity's view of the LLM gateway's token book.

The identity service thinks in agents (a registered agent gets a token; revoking an agent refuses
all of its tokens), the gateway in replicas (each spawned replica holds its own token). A
registered agent's token is held by a pseudo-replica named after the agent; revoking an agent
revokes its replicas' tokens too, so `agentctl agents revoke NAME` stops its model calls at once.
"""

from __future__ import annotations

from agentd.gateway import TokenBook

__all__ = ["IdentityTokens"]


class IdentityTokens:
    """`agentd.identity.TokenBook` over the gateway's `TokenBook`."""

    def __init__(self, book: TokenBook) -> None:
        self.book = book

    def issue(self, agent: str) -> str:
        return self.book.issue(agent, f"{agent}@identity", kind="registered")

    def revoke(self, agent: str) -> None:
        self.book.revoke_agent(agent)

    def agent_for(self, token: str) -> str | None:
        holder = self.book.holder(token)
        return holder.agent if holder else None
