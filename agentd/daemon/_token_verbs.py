"""Control verbs for outside LLM-gateway tokens (`agentctl tokens`): `tokens` lists them,
`tokens.issue` and `tokens.revoke` change them (admins only: `ctl:*` in policies/policy.csv,
capped by the operator's issued role like every verb). Each change is a `control.command` and
a `token.issued` / `token.revoked` record; the secret is in the issuer's reply only, never in a
record or a log line. See agentd/gateway/_outside_tokens.py and docs/identity.md."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agentd.config import external_subject
from agentd.control import ControlPlane, ControlRequest
from agentd.daemon._authority import Authority
from agentd.errors import ControlError
from agentd.gateway import TokenBucket, parse_ttl

__all__ = ["TokenVerbs"]

MAX_POOLS = 64


class TokenVerbs:
    """`tokens`, `tokens.issue NAME --pool P --ttl 30d`, `tokens.revoke NAME`."""

    def __init__(
        self,
        bucket: TokenBucket | None,
        *,
        pools: Callable[[], Iterable[str]],
        authority: Authority,
        record: Callable[..., None],
    ) -> None:
        self._bucket = bucket
        self._pools = pools
        self._authority = authority
        self._record = record

    def register(self, control: ControlPlane) -> None:
        control.register("tokens", self.list)
        control.register("tokens.issue", self.issue)
        control.register("tokens.revoke", self.revoke)

    def _tokens(self) -> TokenBucket:
        if self._bucket is None:
            raise ControlError(
                "unavailable",
                "the LLM gateway is off ([gateway].enabled = false): there is nothing to issue "
                "tokens for",
            )
        return self._bucket

    async def list(self, request: ControlRequest) -> list[dict[str, Any]]:
        """Every outside token: name, subject, pools, expiry, issuer, state; never a secret or
        its digest."""
        return [
            {**entry.row(), "subject": external_subject(entry.name)}
            for entry in self._tokens().book.outside_tokens()
        ]

    async def issue(self, request: ControlRequest) -> dict[str, Any]:
        bucket = self._tokens()
        name = _text(request, "name")
        ttl = _text(request, "ttl")
        ttl_s = parse_ttl(ttl)
        pools = self._checked_pools(request.args.get("pools"))
        self._command(request, "tokens.issue", name=name)
        secret, entry = await bucket.issue(name, pools, ttl_s, request.operator)
        subject = external_subject(name)
        # the scope narrows what policy grants; it grants nothing: say so when policy would
        # refuse every call the token may make
        denied = [
            p for p in pools if not self._authority.check(subject, f"model:{p}", "infer").allowed
        ]
        warning = None
        if denied:
            lines = "; ".join(f"p, {subject}, model:{p}, infer, allow" for p in denied)
            warning = f"policy does not let {subject} infer on {', '.join(denied)}: add `{lines}`"
        self._record(
            "token.issued",
            operator=request.operator,
            decision="issued",
            reason=warning,
            inputs={"name": name, "pools": list(pools), "ttl": ttl},
            subject=subject,
            expires_at=entry.expires_at,
        )
        result: dict[str, Any] = {
            **entry.row(),
            "subject": subject,
            "token": secret,  # shown this once; the daemon keeps only its digest
        }
        if warning is not None:
            result["warning"] = warning
        return result

    async def revoke(self, request: ControlRequest) -> dict[str, Any]:
        name = _text(request, "name")
        self._command(request, "tokens.revoke", name=name)
        entry = await self._tokens().revoke(name, request.operator)
        self._record(
            "token.revoked",
            operator=request.operator,
            decision="revoked",
            inputs={"name": name},
            subject=external_subject(name),
            issued_by=entry.issued_by,
        )
        return {**entry.row(), "subject": external_subject(name)}

    def _checked_pools(self, value: object) -> tuple[str, ...]:
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(p, str) and p for p in value)
        ):
            raise ControlError(
                "bad_request", "argument 'pools' must be a list of model pool names (--pool)"
            )
        if len(value) > MAX_POOLS:
            raise ControlError("bad_request", f"at most {MAX_POOLS} pools per token")
        known = sorted(self._pools())
        unknown = [p for p in value if p not in known]
        if unknown:
            raise ControlError(
                "unknown_pool",
                f"no model pool {', '.join(map(repr, unknown))}; the pools are "
                f"{', '.join(known) or 'none ([models.<name>] in agentd.toml)'}",
                pools=known,
            )
        return tuple(sorted(set(value)))

    def _command(self, request: ControlRequest, verb: str, **fields: Any) -> None:
        self._record(
            "control.command",
            operator=request.operator,
            decision=verb,
            inputs=dict(request.args),
            **fields,
        )


def _text(request: ControlRequest, name: str) -> str:
    value = request.args.get(name)
    if not isinstance(value, str) or not value:
        raise ControlError("bad_request", f"missing argument {name!r} (a string)")
    return value
