"""Canonical arguments and the binding of a human approval to one exact call.

An approval is given for a request as it was shown to the approver: the same subject, object and
action, the same arguments byte for byte in canonical JSON, under the same policy version, before
an expiry. A later call may use the approval only if all of that still holds, so an injected
prompt cannot get approval for 9,000 and then send 90,000 or another payee, and a policy change
voids approvals given under the old one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._request import Decision, Request


def canonical_args(args: Mapping[str, Any] | None) -> str:
    """Arguments as canonical JSON: sorted keys, no spaces, UTF-8, no NaN or infinity.

    `None` and `{}` are both `{}`. Raises `ValueError` for values JSON cannot carry.
    """
    if not args:
        return "{}"
    try:
        return json.dumps(
            args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"arguments are not canonical JSON: {exc}") from None


def args_digest(args: Mapping[str, Any] | None) -> str:
    """SHA-256 (hex) of `canonical_args(args)`."""
    return hashlib.sha256(canonical_args(args).encode()).hexdigest()


@dataclass(frozen=True)
class ApprovalBinding:
    """What a human approved: one exact call under one policy version, until `expires_at`.

    `expires_at` is wall-clock time (seconds since the epoch), because approvals are stored and
    checked across processes and hosts.
    """

    subject: str
    object: str
    action: str
    args_digest: str
    policy_version: str
    rule: str
    expires_at: float

    @classmethod
    def for_request(
        cls, request: Request, decision: Decision, *, ttl_s: float, now: float | None = None
    ) -> ApprovalBinding:
        """Bind an approval of `request`, which `decision` said needs approval, for `ttl_s`."""
        if decision.effect != "approval_required":
            raise ValueError(f"decision is {decision.effect!r}, not 'approval_required'")
        if not (ttl_s > 0 and math.isfinite(ttl_s)):
            raise ValueError("ttl_s must be a positive number of seconds")
        start = time.time() if now is None else now
        return cls(
            request.subject,
            request.object,
            request.action,
            args_digest(request.args),
            decision.policy_version,
            decision.rule,
            start + ttl_s,
        )

    def mismatch(
        self, request: Request, *, policy_version: str, now: float | None = None
    ) -> str | None:
        """None when this approval covers `request` now, else why it does not."""
        current = time.time() if now is None else now
        if current >= self.expires_at:
            return f"the approval expired {current - self.expires_at:.1f}s ago"
        if (request.subject, request.object, request.action) != (
            self.subject,
            self.object,
            self.action,
        ):
            return (
                f"the approval is for {self.subject} {self.action} {self.object}, not "
                f"{request.subject} {request.action} {request.object}"
            )
        if policy_version != self.policy_version:
            return "the policy changed since the approval"
        try:
            digest = args_digest(request.args)
        except ValueError as exc:
            return str(exc)
        if digest != self.args_digest:
            return "the arguments differ from the approved ones"
        return None

    def matches(self, request: Request, *, policy_version: str, now: float | None = None) -> bool:
        """Whether this approval covers `request` under `policy_version` at `now`."""
        return self.mismatch(request, policy_version=policy_version, now=now) is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApprovalBinding:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})
