"""The decision point every enforcement point asks: decide(), explain(), atomic reload().

Thread-safety: the current policy is one immutable `Policy` reference. decide() reads it once and
uses only that snapshot, and reload() builds and validates the new snapshot completely before it
replaces the reference with a single assignment. So once reload() has returned, every decide()
that starts uses the new policy; a decide() already running when the swap happens finishes on the
snapshot it started with (and its Decision says which version that was). There is no lock on the
decide() path, hence nothing to deadlock on; reload() takes a lock only against other reloads.

Speed without changing an answer: decisions are memoised in the snapshot's own cache, keyed by the
whole request (subject, object, action, canonical arguments). Because the cache belongs to the
snapshot, a reload discards it with the snapshot: there is nothing to invalidate and nothing to go
stale. A miss is answered from the snapshot's index (role closure and rules by subject).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._approval import canonical_args
from ._limits import RateLimiter
from ._policy import Policy, load_policy
from ._request import Decision, Request


class DecisionPoint:
    """Holds the current `Policy` and answers `decide()`; `limiter` enforces its rate limits."""

    def __init__(
        self,
        policy: Policy,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 100_000,
    ) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._policy = policy
        self._cache_size = cache_size
        self._reload_lock = threading.Lock()
        self.limiter = RateLimiter(policy.limits, clock=clock)

    @classmethod
    def from_dir(
        cls,
        directory: str | Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 100_000,
    ) -> DecisionPoint:
        """Load the policy in `directory` (raising `PolicyError`) and serve it."""
        return cls(load_policy(directory), clock=clock, cache_size=cache_size)

    @property
    def policy(self) -> Policy:
        """The current snapshot."""
        return self._policy

    @property
    def version(self) -> str:
        return self._policy.version

    def reload(self, directory: str | Path | None = None) -> Policy:
        """Load, validate and swap in the policy in `directory` (default: the current one's).

        Raises `PolicyError` (file:line: reason) and keeps the old policy when the new one is
        invalid. Unchanged content (same version) keeps the current snapshot and its cache.
        """
        with self._reload_lock:
            current = self._policy
            new = load_policy(directory if directory is not None else current.files.directory)
            if new.version == current.version and new.files == current.files:
                return current
            self._policy = new
            self.limiter.reload(new.limits)
            return new

    def decide(self, request: Request) -> Decision:
        """Allow, deny or require approval for `request`, naming the rule that decided."""
        policy = self._policy
        args = request.args
        if args:
            try:
                canonical = canonical_args(args)
            except ValueError as exc:
                return Decision("deny", "request", str(exc), policy.version, "request")
        else:
            canonical = "{}"
        tainted = request.tainted is True
        key = (request.subject, request.object, request.action, canonical, tainted)
        cache = policy.cache
        try:
            found = cache.get(key)
        except TypeError:  # an unhashable subject/object/action: not a valid request
            return policy.evaluate(
                request.subject, request.object, request.action, canonical, tainted
            )
        if found is not None:
            return found
        decision = policy.evaluate(
            request.subject, request.object, request.action, canonical, tainted
        )
        if len(cache) >= self._cache_size:
            cache.clear()  # simple and safe under concurrent readers; a warm set refills fast
        cache[key] = decision
        return decision

    def explain(
        self,
        subject: str,
        object: str,
        action: str,
        args: Mapping[str, Any] | None = None,
        *,
        tainted: bool = False,
    ) -> Explanation:
        """The decision for a request and every rule that bears on it, with why."""
        return explain_request(
            self._policy, Request(subject, object, action, args, tainted=tainted)
        )


@dataclass(frozen=True)
class RuleTrace:
    """One rule looked at while explaining: its name, what it says, and what it did here."""

    rule: str
    text: str
    outcome: str


@dataclass(frozen=True)
class Explanation:
    """Why a request gets its decision: the roles the subject acts as, every matching access
    rule, and each constraint and approval rule evaluated for the arguments."""

    request: Request
    decision: Decision
    acts_as: tuple[RuleTrace, ...]
    access: tuple[RuleTrace, ...]
    constraints: tuple[RuleTrace, ...]
    approvals: tuple[RuleTrace, ...]
    taint: tuple[RuleTrace, ...] = ()

    def render(self) -> str:
        r, d = self.request, self.decision
        lines = [
            f"request: {r.subject} {r.action} {r.object} args={canonical_args(r.args)}"
            + (" (tainted run)" if r.tainted else ""),
            f"decision: {d.effect.upper()} by {d.rule}",
            f"  {d.reason}",
            f"policy version: {d.policy_version}",
        ]
        for title, traces in (
            ("acts as", self.acts_as),
            ("access rules", self.access),
            ("argument constraints", self.constraints),
            ("taint rule", self.taint),
            ("approval rules", self.approvals),
        ):
            lines.append(f"{title}:" + ("" if traces else " none"))
            lines.extend(f"  {t.rule}  {t.text}  -> {t.outcome}" for t in traces)
        return "\n".join(lines)


def explain_request(policy: Policy, request: Request) -> Explanation:
    """Build the `Explanation` of `request` under `policy` (not on the hot path)."""
    try:
        canonical = canonical_args(request.args)
    except ValueError as exc:
        decision = Decision("deny", "request", str(exc), policy.version, "request")
        return Explanation(request, decision, (), (), (), ())
    decision = policy.evaluate(
        request.subject, request.object, request.action, canonical, request.tainted
    )
    if decision.stage == "request":
        return Explanation(request, decision, (), (), (), ())
    acts_as = tuple(
        RuleTrace(
            chain[-1].name if chain else "-",
            name,
            "the subject itself"
            if not chain
            else " -> ".join([request.subject, *(link.role for link in chain)]),
        )
        for name, chain in policy.access.role_paths(request.subject).items()
    )
    access = tuple(
        RuleTrace(
            rule.name,
            rule.text,
            rule.effect + ("" if rule.subject == request.subject else f" (as {rule.subject})"),
        )
        for rule in policy.access.matching(request.subject, request.object, request.action)
    )
    if not access:
        access = (RuleTrace(policy.model.default_deny_rule, "deny by default", "deny"),)
    constraints: list[RuleTrace] = []
    approvals: list[RuleTrace] = []
    taint: list[RuleTrace] = []
    rule = policy.constraints.taint.get(request.object)
    if rule is not None:
        applies = "applies" if request.tainted else "not tainted: does not apply"
        taint.append(RuleTrace(rule.rule, rule.effect, applies))
    if decision.stage in ("constraint", "taint", "approval") or decision.effect == "allow":
        args = json.loads(canonical)
        for check in policy.constraints.checks.get(request.object, ()):
            failure = check.failure(args)
            constraints.append(RuleTrace(check.rule, check.op, failure or "passes"))
        for approval in policy.constraints.approvals.get(request.object, ()):
            needed = approval.needed(args)
            approvals.append(
                RuleTrace(
                    approval.rule,
                    approval.op,
                    f"approval required: {needed}" if needed else "not needed",
                )
            )
    return Explanation(
        request, decision, acts_as, access, tuple(constraints), tuple(approvals), tuple(taint)
    )
