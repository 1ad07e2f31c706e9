"""Token budgets per agent and pool: reserve up front, settle with the real usage.

Each (agent, pool) has a bucket of `capacity` tokens refilled continuously over `window_s`. A
call reserves its prompt estimate plus the most it may generate (every sequence running to
max_tokens) before it goes upstream, so concurrent calls cannot overspend; when the response
says what it really used, the difference is given back. The same reservation is taken from the
policy's model limits (limits.toml `model = ...` entries, `TokenLimits`) when the gateway has
them: a call goes upstream only when both can pay for it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from agentd.errors import RateLimited

__all__ = ["BudgetBook", "Reservation", "TokenLimits"]


class TokenLimits(Protocol):
    """limits.toml's per-agent model limits, as the gateway uses them (the daemon passes the
    policy's `agentd.policy.RateLimiter`, which reloads with the policy)."""

    def acquire_tokens(self, agent: str, model: str, tokens: int) -> None:
        """Take `tokens` from (agent, model)'s bucket, or raise `RateLimited` (with the rule)
        and take nothing; no limit for the key: nothing to take."""
        ...

    def settle_tokens(self, agent: str, model: str, reserved: int, used: int) -> None:
        """Give back `reserved - used` (a negative difference charges the overrun)."""
        ...


@dataclass
class _Bucket:
    capacity: float
    level: float
    updated: float


@dataclass
class Reservation:
    """Tokens held for one call; `settle()` once with what the call really used."""

    book: BudgetBook | None
    key: tuple[str, str]
    tokens: int
    settled: bool = False
    limits: TokenLimits | None = None

    def settle(self, used: int | None) -> None:
        """Give back what was reserved and not used (all of it when `used` is None because the
        call never reached a model). Repeatable: only the first call counts."""
        if self.settled:
            return
        self.settled = True
        spent = used if used is not None else 0
        if self.book is not None:
            self.book.refund(self.key, self.tokens - spent)
        if self.limits is not None:
            self.limits.settle_tokens(self.key[0], self.key[1], self.tokens, spent)


class BudgetBook:
    """Budgets of every agent on every pool; `None` capacity means unlimited."""

    def __init__(
        self,
        default_tokens: int | None,
        window_s: float,
        overrides: Mapping[str, int] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        limits: TokenLimits | None = None,
    ) -> None:
        self.limits = limits
        self._default = default_tokens
        self._window_s = window_s
        self._overrides = dict(overrides or {})
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def capacity(self, agent: str, pool: str) -> int | None:
        return self._overrides.get(f"{agent}/{pool}", self._default)

    def reserve(self, agent: str, pool: str, tokens: int) -> Reservation:
        """Hold `tokens` of `agent`'s budget on `pool` and of its model limit; raise
        RateLimited (with the seconds until enough has refilled, and the limit's rule when a
        limits.toml entry refused) when either cannot cover them; then nothing is held."""
        held = self._reserve_budget(agent, pool, tokens)
        if self.limits is not None:
            try:
                self.limits.acquire_tokens(agent, pool, tokens)
            except RateLimited:
                held.settle(None)
                raise
            held.limits = self.limits
        return held

    def _reserve_budget(self, agent: str, pool: str, tokens: int) -> Reservation:
        key = (agent, pool)
        capacity = self.capacity(agent, pool)
        if capacity is None:
            return Reservation(None, key, tokens)
        bucket = self._refilled(key, capacity)
        if tokens > bucket.level:
            rate = capacity / self._window_s
            # a call larger than the whole budget would wait for a full bucket and still
            # fail: no wait helps (retry_after_s = inf; the gateway answers 400, not 429)
            if tokens > capacity:
                source = (
                    f"[gateway].budgets[{agent}/{pool}]"
                    if f"{agent}/{pool}" in self._overrides
                    else "[gateway].budget_tokens"
                )
                raise RateLimited(
                    f"{agent} asked for {tokens} tokens on pool {pool}; its whole budget is "
                    f"{capacity} per {self._window_s:g}s ({source}), so it can never fit",
                    retry_after_s=math.inf,
                )
            wait = math.ceil((tokens - bucket.level) / rate * 1000) / 1000
            raise RateLimited(
                f"{agent}'s token budget on pool {pool} is spent ({capacity} per "
                f"{self._window_s:g}s); {int(bucket.level)} left, {tokens} needed",
                retry_after_s=wait,
            )
        bucket.level -= tokens
        return Reservation(self, key, tokens)

    def refund(self, key: tuple[str, str], tokens: int) -> None:
        """Return `tokens` (negative: charge the overrun of a call that used more)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.level = min(bucket.capacity, bucket.level + tokens)

    def remaining(self, agent: str, pool: str) -> float | None:
        capacity = self.capacity(agent, pool)
        if capacity is None:
            return None
        return self._refilled((agent, pool), capacity).level

    def _refilled(self, key: tuple[str, str], capacity: int) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(capacity), float(capacity), now)
            return bucket
        elapsed = now - bucket.updated
        bucket.updated = now
        bucket.level = min(float(capacity), bucket.level + elapsed * capacity / self._window_s)
        bucket.capacity = float(capacity)
        return bucket
