"""Token budgets: limits.toml's `model = ...` limits, reserved before a call, settled after.

The limit of (agent, pool) is whatever the policy's limits.toml says now (`limit_of`, the
daemon passes `DecisionPoint.limiter.token_limit`, so `agentctl policy reload` changes it for
the next call). The bucket's state (tokens left, when) lives in a `BucketStore`: the daemon's
is a JetStream key-value bucket (`_kv_budgets.KvBucketStore`), so a restarted daemon and every
host of a cluster spend from the same bucket; every change is a compare-and-set on the key's
revision, retried on a conflict with the state another host wrote.

A call reserves the most it may use before it goes upstream (its prompt estimate plus every
sequence running to max_tokens), so concurrent calls cannot overspend; once the response says
what it used, the rest is given back (an overrun is charged, the bucket may go into debt).
Per key, operations queue and go to the store as one batch (one write while the previous one
is in flight, a group commit): a burst of calls costs a round trip or two, not one each in turn.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from agentd.errors import RateLimited
from agentd.policy import RateLimit

__all__ = [
    "BucketState",
    "BucketStore",
    "BudgetUnavailable",
    "MemoryBucketStore",
    "Reservation",
    "TokenBudgets",
]

log = logging.getLogger("agentd.gateway")

MAX_CONFLICTS = 50
"""Compare-and-set retries of one batch before its calls are refused as unavailable."""
SHUTDOWN_FLUSH_S = 5.0
SETTLE_DELAY_S = 0.05
"""How long a settlement may wait for a reservation of the same key to share its write."""


class BudgetUnavailable(Exception):
    """The bucket's store could not be read or written: the call is refused (fail closed)."""


@dataclass(frozen=True)
class BucketState:
    """A bucket as stored: `tokens` left at wall-clock `stamp`, and the limit it was kept under
    (`rate` per second, `burst`) so a changed limit is noticed."""

    tokens: float
    stamp: float
    rate: float
    burst: float

    def to_json(self) -> dict[str, float]:
        return {"tokens": self.tokens, "stamp": self.stamp, "rate": self.rate, "burst": self.burst}

    @classmethod
    def from_json(cls, body: object) -> BucketState:
        if not isinstance(body, dict):
            raise ValueError("not an object")
        values = [body.get(k) for k in ("tokens", "stamp", "rate", "burst")]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ValueError(f"fields tokens, stamp, rate, burst must be numbers: {body}")
        return cls(*(float(v) for v in values))  # type: ignore[arg-type]

    def level(self, limit: RateLimit, now: float) -> tuple[float, float]:
        """(tokens, stamp) now under `limit`: refilled at its rate, capped at its burst (a
        changed limit keeps the tokens, capped: a reload never refills). A stamp ahead of this
        host's clock (another host's) refills nothing until the clock passes it."""
        tokens = min(self.tokens, limit.burst)
        if now > self.stamp:
            tokens = min(limit.burst, tokens + (now - self.stamp) * limit.rate_per_s)
        return tokens, max(now, self.stamp)


class BucketStore(Protocol):
    """Where bucket states live. `load` gives (state or None, revision); `swap` writes a state
    if the key is still at `revision` (None: the key must not exist) and returns the new
    revision, or None when someone else wrote first. Errors raise `BudgetUnavailable`."""

    async def load(self, key: str) -> tuple[BucketState | None, int | None]: ...

    async def swap(self, key: str, state: BucketState, revision: int | None) -> int | None: ...


class MemoryBucketStore:
    """A `BucketStore` in this process (tests, tools); the daemon uses the KV store."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[BucketState, int]] = {}
        self._revision = 0

    async def load(self, key: str) -> tuple[BucketState | None, int | None]:
        found = self.states.get(key)
        return (None, None) if found is None else found

    async def swap(self, key: str, state: BucketState, revision: int | None) -> int | None:
        found = self.states.get(key)
        if (found[1] if found else None) != revision:
            return None
        self._revision += 1
        self.states[key] = (state, self._revision)
        return self._revision


@dataclass
class Reservation:
    """Tokens held for one call; `settle()` once with what the call really used."""

    budgets: TokenBudgets | None
    agent: str
    pool: str
    tokens: int
    settled: bool = False

    def settle(self, used: int | None) -> None:
        """Give back what was reserved and not used (all of it when `used` is None: the call
        never reached a model), or charge the overrun. Repeatable: only the first call counts.
        Does not wait: the write joins the key's next batch."""
        if self.settled or self.budgets is None:
            return
        self.settled = True
        self.budgets.settle_soon(self, used if used is not None else 0)


@dataclass
class _Op:
    cost: float  # reserve: tokens to take; settle: tokens to give back (negative: charge)
    reserve: bool
    done: anyio.Event = field(default_factory=anyio.Event)
    error: Exception | None = None
    charged: bool = False


@dataclass
class _Lane:
    """One key's cached state and the operations waiting for its next write."""

    state: BucketState | None = None
    revision: int | None = None
    loaded: bool = False
    queue: list[_Op] = field(default_factory=list)
    busy: bool = False
    deferred: bool = False  # a drain of settlements is scheduled


class TokenBudgets:
    """Every (agent, pool) token bucket the gateway spends from. `run()` is a service (it holds
    the writers); `reserve()` and `Reservation.settle()` need it running."""

    def __init__(
        self,
        limit_of: Callable[[str, str], RateLimit | None],
        store: BucketStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit_of = limit_of
        self.store = store
        self._clock = clock
        self._lanes: dict[str, _Lane] = {}
        self._tg: TaskGroup | None = None
        self._idle: anyio.Event | None = None  # set when the last busy lane is done

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None

    async def flush(self) -> None:
        """Wait (at most SHUTDOWN_FLUSH_S) until every queued write has been made."""
        for key, lane in self._lanes.items():  # settlements waiting for company: write now
            if lane.queue and not lane.busy and self._tg is not None:
                lane.busy = True
                self._tg.start_soon(self._drain, key, lane)
        with anyio.move_on_after(SHUTDOWN_FLUSH_S):
            while any(lane.busy for lane in self._lanes.values()):
                self._idle = anyio.Event()
                await self._idle.wait()

    async def reserve(self, agent: str, pool: str, tokens: int) -> Reservation:
        """Hold `tokens` of (agent, pool)'s limit. Raises `RateLimited` with the rule (and
        `retry_after_s = inf` for more than the whole burst: no wait helps), and
        `BudgetUnavailable` when the store fails; then nothing is held. No limit: no-op."""
        limit = self.limit_of(agent, pool)
        if limit is None:
            return Reservation(None, agent, pool, tokens)
        if tokens > limit.burst:  # decided by the limit alone: no round trip
            raise _refusal(limit, agent, pool, tokens, 0.0, math.inf)
        op = _Op(float(tokens), reserve=True)
        self._enqueue(bucket_key(agent, pool), op)
        held = Reservation(self, agent, pool, tokens)
        try:
            # shielded: a caller that goes away mid-write must not leave tokens taken that no
            # reservation will give back (the write takes a round trip; the store times out)
            with anyio.CancelScope(shield=True):
                await op.done.wait()
        except BaseException:  # cancelled all the same (asyncio's own cancel): give it back
            if self._tg is not None:
                self._tg.start_soon(self._give_back, op, held)
            raise
        if op.error is not None:
            raise op.error
        return held if op.charged else Reservation(None, agent, pool, tokens)

    async def _give_back(self, op: _Op, held: Reservation) -> None:
        await op.done.wait()
        if op.charged:
            held.settle(None)

    def settle_soon(self, reservation: Reservation, used: int) -> None:
        """Queue the settlement of `reservation` (the reserved tokens less `used`)."""
        op = _Op(float(reservation.tokens - used), reserve=False)
        self._enqueue(bucket_key(reservation.agent, reservation.pool), op, urgent=False)

    async def remaining(self, agent: str, pool: str) -> float | None:
        """Tokens in (agent, pool)'s bucket now, or None when not limited. Queued behind the
        key's pending settlements, so it counts every call answered before it was asked."""
        if self.limit_of(agent, pool) is None:
            return None
        key = bucket_key(agent, pool)
        await self._submit(key, _Op(0.0, reserve=False))
        state = self._lanes[key].state
        limit = self.limit_of(agent, pool)
        if limit is None or state is None:
            return None if limit is None else limit.burst
        return state.level(limit, self._clock())[0]

    # the writers
    async def _submit(self, key: str, op: _Op) -> None:
        self._enqueue(key, op)
        await op.done.wait()

    def _enqueue(self, key: str, op: _Op, *, urgent: bool = True) -> None:
        """Queue `op`; an urgent one (a caller waits) starts a write now, a settlement waits
        up to SETTLE_DELAY_S for the next reservation's write (one write per call, not two;
        a refund that comes a little late only errs on the side of the budget)."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.queue.append(op)
        if lane.busy or (not urgent and lane.deferred):
            return
        if self._tg is None:
            raise RuntimeError("TokenBudgets is not running: start run() first")
        if urgent:
            lane.busy = True
            self._tg.start_soon(self._drain, key, lane)
        else:
            lane.deferred = True
            self._tg.start_soon(self._drain_later, key, lane)

    async def _drain_later(self, key: str, lane: _Lane) -> None:
        await anyio.sleep(SETTLE_DELAY_S)
        lane.deferred = False
        if lane.queue and not lane.busy:
            lane.busy = True
            await self._drain(key, lane)

    async def _drain(self, key: str, lane: _Lane) -> None:
        try:
            while lane.queue:
                batch, lane.queue = lane.queue, []
                try:
                    await self._commit(key, lane, batch)
                except Exception as exc:
                    if not isinstance(exc, BudgetUnavailable):
                        log.exception("token budget %s: a write failed", key)
                    lane.loaded = False  # read it again next time
                    for op in batch:
                        if op.reserve:
                            op.error = BudgetUnavailable(f"token budget {key}: {exc}")
                        else:
                            log.error("token budget %s: a settlement was lost: %s", key, exc)
                finally:
                    for op in batch:
                        op.done.set()
        finally:
            lane.busy = False
            if self._idle is not None and not any(x.busy for x in self._lanes.values()):
                self._idle.set()

    async def _commit(self, key: str, lane: _Lane, batch: list[_Op]) -> None:
        agent, pool = split_key(key)
        for _ in range(MAX_CONFLICTS):
            fresh = not lane.loaded
            if fresh:
                lane.state, lane.revision = await self.store.load(key)
                lane.loaded = True
            limit = self.limit_of(agent, pool)
            if limit is None:  # no limit (any more): nothing to take or give back
                for op in batch:
                    op.error, op.charged = None, False
                return
            now = self._clock()
            if lane.state is None:
                tokens, stamp = limit.burst, now
            else:
                tokens, stamp = lane.state.level(limit, now)
            for op in batch:
                op.error, op.charged = None, False
                if not op.reserve:
                    tokens = min(limit.burst, tokens + op.cost)
                elif op.cost > limit.burst:
                    op.error = _refusal(limit, agent, pool, op.cost, tokens, math.inf)
                elif op.cost > tokens:
                    wait = (op.cost - tokens) / limit.rate_per_s
                    op.error = _refusal(limit, agent, pool, op.cost, tokens, wait)
                else:
                    tokens -= op.cost
                    op.charged = True
            if all(op.error is not None for op in batch):
                if not fresh:  # another host may have given tokens back: refuse on its word
                    lane.loaded = False
                    continue
                return  # refusals change nothing: no write
            state = BucketState(tokens, stamp, limit.rate_per_s, limit.burst)
            revision = await self.store.swap(key, state, lane.revision)
            if revision is not None:
                lane.state, lane.revision = state, revision
                return
            lane.loaded = False  # another host wrote first: read its state, decide again
        raise BudgetUnavailable(f"{MAX_CONFLICTS} conflicting writes in a row")


def _refusal(
    limit: RateLimit, agent: str, pool: str, cost: float, tokens: float, wait: float
) -> RateLimited:
    return RateLimited(
        f"rate limit {limit.rule} for agent {agent} on model {pool}: {cost:g} tokens needed, "
        f"{max(tokens, 0):.0f} available (burst {limit.burst:g}, "
        f"{limit.rate_per_s * 60:g} per minute)"
        + ("" if math.isinf(wait) else f"; retry after {wait:.3f}s"),
        retry_after_s=wait,
        rule=limit.rule,
    )


def _part(name: str) -> str:
    """A name as a KV key token: itself when it is plain, else `=` + its hex (no plain name
    has `=`, so the two never collide)."""
    if name and all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
        return name
    return "=" + name.encode().hex()


def _unpart(token: str) -> str:
    return bytes.fromhex(token[1:]).decode() if token.startswith("=") else token


def bucket_key(agent: str, pool: str) -> str:
    """The store key of (agent, pool): `tokens.<agent>.<pool>`."""
    return f"tokens.{_part(agent)}.{_part(pool)}"


def split_key(key: str) -> tuple[str, str]:
    _, agent, pool = key.split(".")
    return _unpart(agent), _unpart(pool)
