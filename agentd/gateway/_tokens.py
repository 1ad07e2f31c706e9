"""Bearer tokens: who a request to the gateway comes from. One book for every kind of holder:

- an agent replica: the daemon issues one token per replica when it spawns it
  (AGENTD_LLM_TOKEN in the replica's environment) and revokes it when the replica exits;
- a registered external agent: its token (`llm_token`) is held by `<agent>@identity`;
- an outside client: an operator's `agentctl tokens issue` (`_outside_tokens.py`), scoped to
  pools, expiring, kept by digest only and shared with the other hosts through a key-value
  bucket (`_token_bucket.py`).

Replica and registered tokens live in memory, as long as what holds them. A token nobody issued
is refused. The policy subject of a replica is its agent's name; of the others `ext:<name>`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Literal

from agentd.config import external_subject
from agentd.errors import ControlError
from agentd.gateway._outside_tokens import (
    TOKEN_NAME,
    OutsideToken,
    new_outside_secret,
    token_digest,
)

__all__ = ["HolderKind", "TokenBook", "TokenHolder"]

HolderKind = Literal["replica", "registered", "outside"]


@dataclass(frozen=True)
class TokenHolder:
    """Whom a token was issued to. `pools` is an outside token's scope (None: policy alone)."""

    agent: str
    replica: str
    kind: HolderKind = "replica"
    pools: tuple[str, ...] | None = None

    @property
    def subject(self) -> str:
        """The policy subject: the agent's name for a replica, else `ext:<name>`."""
        return self.agent if self.kind == "replica" else external_subject(self.agent)


class TokenBook:
    """Every token the gateway accepts."""

    def __init__(self) -> None:
        self._holders: dict[str, TokenHolder] = {}
        self._by_replica: dict[str, str] = {}
        self._outside: dict[str, OutsideToken] = {}  # name -> entry
        self._outside_by_digest: dict[str, str] = {}  # digest -> name

    def issue(self, agent: str, replica: str, *, kind: HolderKind = "replica") -> str:
        """A fresh token for `replica` of `agent`; a replica's earlier token is revoked."""
        self.revoke(replica)
        token = "agentd-" + secrets.token_urlsafe(32)
        self._holders[token] = TokenHolder(agent, replica, kind)
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
        """Who holds `token`, or None for a token not (or no longer) issued, revoked or
        expired."""
        holder = self._holders.get(token)
        if holder is not None:
            return holder
        entry = self.outside_entry(token)
        if entry is None or entry.state() != "active":
            return None
        return TokenHolder(entry.name, f"{entry.name}@token", "outside", entry.pools)

    # outside tokens (agentctl tokens)
    def outside_entry(self, token: str) -> OutsideToken | None:
        """The stored entry of an outside token, whatever its state (None: never issued)."""
        name = self._outside_by_digest.get(token_digest(token))
        return self._outside.get(name) if name is not None else None

    def outside_tokens(self) -> list[OutsideToken]:
        return sorted(self._outside.values(), key=lambda e: e.name)

    def new_outside(
        self, name: str, pools: tuple[str, ...], ttl_s: float, issued_by: str
    ) -> tuple[str, OutsideToken]:
        """A new outside token `name` (the secret, shown once, and its entry to store); a
        name still active is refused. Nothing is kept until `keep()`."""
        if not isinstance(name, str) or not TOKEN_NAME.match(name):
            raise ControlError(
                "bad_request",
                f"token name {name!r} must be lowercase letters, digits, _ and - (up to 63, "
                "starting with a letter): it becomes the policy subject ext:<name>",
            )
        known = self._outside.get(name)
        if known is not None and known.state() == "active":
            raise ControlError(
                "name_taken",
                f"a token named {name!r} is active (expires {_when(known.expires_at)}): "
                "revoke it first (agentctl tokens revoke) or choose another name",
            )
        secret = new_outside_secret()
        now = time.time()
        entry = OutsideToken(name, token_digest(secret), pools, now, now + ttl_s, issued_by)
        return secret, entry

    def keep(self, entry: OutsideToken) -> None:
        """Hold `entry` as it is now (issued here, or read from the bucket)."""
        old = self._outside.get(entry.name)
        if old is not None and old.digest != entry.digest:
            self._outside_by_digest.pop(old.digest, None)
        self._outside[entry.name] = entry
        self._outside_by_digest[entry.digest] = entry.name

    def forget(self, name: str) -> None:
        old = self._outside.pop(name, None)
        if old is not None:
            self._outside_by_digest.pop(old.digest, None)


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))
