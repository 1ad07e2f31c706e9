"""limits.toml and the token buckets that enforce it.

    [[limit]]
    agent = "*"            # an agent name, or "*": every agent, each with its own bucket
    tool = "credit.score"  # or model = "tiny" (a model pool: the unit is tokens, agent required)
    per_second = 5         # or per_minute = N
    burst = 10             # bucket size: how much may be spent at once after a quiet spell

    [[limit]]
    tool = "http.fetch"    # no agent: one bucket for the tool, shared by every agent

Three kinds of key: (agent, tool) calls, (agent, model) tokens, and a tool overall. An entry for
a named agent overrides the `"*"` entry for that agent. A key without an entry is not limited.
This module's buckets serve the tool gateway; (agent, model) token limits are read from here
(`token_limit`) by the LLM gateway, whose buckets live in the daemon's key-value store.
A bucket starts full. A cost larger than the burst can never be paid: `RateLimited` carries
`retry_after_s = inf`. Reload keeps the state of every bucket whose limit is unchanged; a bucket
whose limit changed keeps its tokens, capped at the new burst (a reload never refills a bucket).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agentd.errors import RateLimited

from ._errors import PolicyError, PolicyProblem
from ._toml_entries import TomlEntry, read_toml_entries, validate_entry

KeyKind = Literal["agent_tool", "agent_model", "tool"]
_NAME = re.compile(r"[A-Za-z0-9_.:@/-]+")


@dataclass(frozen=True)
class RateKey:
    """What a bucket limits: `RateKey.agent_tool(a, t)`, `.agent_model(a, m)` or `.tool(t)`."""

    kind: KeyKind
    agent: str | None
    target: str

    @classmethod
    def agent_tool(cls, agent: str, tool: str) -> RateKey:
        return cls("agent_tool", agent, tool)

    @classmethod
    def agent_model(cls, agent: str, model: str) -> RateKey:
        return cls("agent_model", agent, model)

    @classmethod
    def tool(cls, tool: str) -> RateKey:
        return cls("tool", None, tool)

    def __str__(self) -> str:
        if self.kind == "tool":
            return f"tool {self.target}"
        what = "tool" if self.kind == "agent_tool" else "model"
        return f"agent {self.agent} on {what} {self.target}"


@dataclass(frozen=True)
class RateLimit:
    """A refill rate (per second) and a bucket size; `rule` is `limits.toml:LINE`."""

    rule: str
    rate_per_s: float
    burst: float
    unit: Literal["calls", "tokens"]


@dataclass(frozen=True)
class RateLimits:
    """Every limit of a policy, keyed by (kind, agent or "*" or None, tool or model)."""

    entries: Mapping[tuple[KeyKind, str | None, str], RateLimit]

    def limit_for(self, key: RateKey) -> RateLimit | None:
        found = self.entries.get((key.kind, key.agent, key.target))
        if found is None and key.kind != "tool":
            found = self.entries.get((key.kind, "*", key.target))
        return found


class _LimitEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    agent: str | None = None
    tool: str | None = None
    model: str | None = None
    per_second: int | float | None = None
    per_minute: int | float | None = None
    burst: int | float


def parse_limits(file: str, text: str) -> RateLimits:
    """Parse limits.toml; raise `PolicyError` naming file and line of every problem."""
    problems: list[PolicyProblem] = []
    entries: dict[tuple[KeyKind, str | None, str], RateLimit] = {}
    first_line: dict[tuple[KeyKind, str | None, str], int] = {}
    for entry in read_toml_entries(file, text, ("limit",))["limit"]:
        limit = validate_entry(file, entry, _LimitEntry, problems)
        if limit is None:
            continue
        before = len(problems)

        def bad(key: str, reason: str, at: TomlEntry = entry) -> None:
            problems.append(PolicyProblem(file, at.line_of(key), reason))

        if (limit.tool is None) == (limit.model is None):
            bad("", "a [[limit]] names exactly one of tool or model")
        if limit.model is not None and limit.agent is None:
            bad("model", 'a model limit is per agent: add agent = NAME or agent = "*"')
        for key in ("agent", "tool", "model"):
            value = getattr(limit, key)
            if value is not None and not (
                _NAME.fullmatch(value) or (key == "agent" and value == "*")
            ):
                bad(key, f"{key} {value!r} is not a name")
        if (limit.per_second is None) == (limit.per_minute is None):
            bad("", "a [[limit]] has exactly one of per_second or per_minute")
        rate = limit.per_second if limit.per_second is not None else (limit.per_minute or 0) / 60
        for key, value in (
            ("per_second", limit.per_second),
            ("per_minute", limit.per_minute),
            ("burst", limit.burst),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                bad(key, f"{key} must be a positive number, got {value}")
        if len(problems) != before:
            continue
        kind: KeyKind = (
            ("tool" if limit.agent is None else "agent_tool") if limit.tool else "agent_model"
        )
        slot = (kind, limit.agent, limit.tool or limit.model or "")
        if slot in first_line:
            bad("", f"a limit for the same key is already at line {first_line[slot]}")
            continue
        first_line[slot] = entry.line
        entries[slot] = RateLimit(
            f"{file}:{entry.line}",
            float(rate),
            float(limit.burst),
            "tokens" if limit.model else "calls",
        )
    if problems:
        raise PolicyError(problems)
    return RateLimits(entries)


class _Bucket:
    __slots__ = ("limit", "tokens", "stamp")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = limit.burst
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(
                self.limit.burst, self.tokens + (now - self.stamp) * self.limit.rate_per_s
            )
            self.stamp = now


class RateLimiter:
    """Token buckets for the keys `RateLimits` names; thread-safe; `clock` is injectable."""

    def __init__(self, limits: RateLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._buckets: dict[RateKey, _Bucket] = {}
        self._lock = threading.Lock()

    @property
    def limits(self) -> RateLimits:
        return self._limits

    def _bucket(self, key: RateKey, now: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            limit = self._limits.limit_for(key)
            if limit is None:
                return None
            bucket = self._buckets[key] = _Bucket(limit, now)
        bucket.refill(now)
        return bucket

    def acquire(self, key: RateKey, cost: float = 1.0) -> None:
        """Spend `cost` from the bucket of `key`, or raise `RateLimited` and spend nothing."""
        self.acquire_all((key,), cost)

    def acquire_tool_call(self, agent: str, tool: str) -> None:
        """One call of `tool` by `agent`: its (agent, tool) bucket and the tool's overall bucket."""
        self.acquire_all((RateKey.agent_tool(agent, tool), RateKey.tool(tool)), 1.0)

    def acquire_all(self, keys: Iterable[RateKey], cost: float = 1.0) -> None:
        """Spend `cost` from every key's bucket, or from none of them (raising `RateLimited`)."""
        if cost < 0:
            raise ValueError("cost must be 0 or more")
        with self._lock:
            now = self._clock()
            buckets = [(k, b) for k in keys if (b := self._bucket(k, now)) is not None]
            worst: tuple[float, RateKey, _Bucket] | None = None
            for key, bucket in buckets:
                if bucket.tokens < cost:
                    wait = (
                        math.inf
                        if cost > bucket.limit.burst
                        else (cost - bucket.tokens) / bucket.limit.rate_per_s
                    )
                    if worst is None or wait > worst[0]:
                        worst = (wait, key, bucket)
            if worst is not None:
                wait, key, bucket = worst
                raise RateLimited(
                    f"rate limit {bucket.limit.rule} for {key}: {cost:g} {bucket.limit.unit} "
                    f"needed, {max(bucket.tokens, 0):.3g} available; retry after {wait:.3f}s",
                    retry_after_s=wait,
                    rule=bucket.limit.rule,
                )
            for _, bucket in buckets:
                bucket.tokens -= cost

    def token_limit(self, agent: str, model: str) -> RateLimit | None:
        """The current limit of (agent, model) tokens, or None. The LLM gateway keeps these
        buckets itself, in the daemon's key-value store (agentd/gateway/_budgets.py), so they
        survive a restart and are shared by a cluster's hosts; it asks here on every call, so
        a reload applies to the next call."""
        return self._limits.limit_for(RateKey.agent_model(agent, model))

    def charge(self, key: RateKey, cost: float) -> None:
        """Spend `cost` even if the bucket goes into debt (e.g. tokens counted after a call)."""
        with self._lock:
            bucket = self._bucket(key, self._clock())
            if bucket is not None:
                bucket.tokens -= cost

    def available(self, key: RateKey) -> float | None:
        """Tokens in the bucket of `key` now, or None when `key` is not limited."""
        with self._lock:
            bucket = self._bucket(key, self._clock())
            return None if bucket is None else bucket.tokens

    def reload(self, limits: RateLimits) -> None:
        """Use new limits, keeping the state of buckets whose limit did not change."""
        with self._lock:
            now = self._clock()
            kept: dict[RateKey, _Bucket] = {}
            for key, bucket in self._buckets.items():
                new = limits.limit_for(key)
                if new is None:
                    continue
                bucket.refill(now)
                if (new.rate_per_s, new.burst, new.unit) != (
                    bucket.limit.rate_per_s,
                    bucket.limit.burst,
                    bucket.limit.unit,
                ):
                    bucket.tokens = min(bucket.tokens, new.burst)
                bucket.limit = new
                kept[key] = bucket
            self._buckets = kept
            self._limits = limits
