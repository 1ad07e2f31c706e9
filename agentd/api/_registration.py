"""The registration API: external agents join, keep a lease, and leave, on `agentd.api.*`.

    agentd.api.register              bootstrap: {"args": {"name", "public_key", "token", "spec"}}
    agentd.api.register.<name>       pre-authorized identity: {"args": {"spec"}}
    agentd.api.heartbeat.<name>      renew the lease; the reply carries the LLM-gateway token
    agentd.api.deregister.<name>     leave: credentials and token revoked

Only the bootstrap user (who knows the token) may publish the first; only `<name>`'s key may
publish the others (NATS permissions), so the subject proves who speaks. A registrant makes its
own nkey and sends only the public key; the reply on the shared bootstrap inbox carries nothing
secret, and the token travels only on the agent's own inbox. A lease that is not renewed lapses
and is revoked within `lease_check_s` plus a server reload.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import ValidationError

from agentd.api._protocol import MAX_API_REQUEST_BYTES, RegisterArgs
from agentd.bus import Subjects, serve_each
from agentd.config import external_subject
from agentd.control import decode_request, encode_error, encode_ok
from agentd.errors import AgentdError, ControlError
from agentd.identity import IdentityBook, TokenBook, agent_inbox_prefix
from agentd.router import PolicyHook

__all__ = ["RegistrationService"]

log = logging.getLogger("agentd.api")

Record = Callable[..., None]
AgentHook = Callable[[str], Awaitable[None]]


class RegistrationService:
    """Serves `agentd.api.>` and expires lapsed leases."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        book: IdentityBook,
        apply: Callable[[], Awaitable[float]],
        tokens: TokenBook,
        policy: PolicyHook,
        record: Record,
        lease_s: float,
        check_s: float = 0.25,
        taken: Callable[[], set[str]] = set,
        on_registered: AgentHook | None = None,
        on_revoked: AgentHook | None = None,
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self._book = book
        self._apply = apply
        self._tokens = tokens
        self._policy = policy
        self._record = record
        self.lease_s = lease_s
        self._check_s = check_s
        self._taken = taken
        self._on_registered = on_registered
        self._on_revoked = on_revoked
        self._llm_tokens: dict[str, str] = {}
        self._lock = anyio.Lock()
        self._stopped = anyio.Event()

    @property
    def names(self) -> set[str]:
        return {i.name for i in self._book.external()}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        for ident in self._book.external():  # registered before a restart: tokens are new
            self._llm_tokens[ident.name] = self._tokens.issue(ident.name)
        async with serve_each(self._nc, f"{self._subjects.prefix}.api.>", self._answer):
            task_status.started()
            while not self._stopped.is_set():
                with anyio.move_on_after(self._check_s):
                    await self._stopped.wait()
                await self.expire_lapsed()

    async def shutdown(self) -> None:
        self._stopped.set()

    # leases
    async def expire_lapsed(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        lapsed = [i.name for i in self._book.external() if (i.lease_until or 0) < now]
        for name in lapsed:
            await self.revoke(name, kind="agent.lease_expired", reason="lease lapsed")
        return lapsed

    async def revoke(
        self, name: str, *, kind: str, reason: str, operator: str | None = None
    ) -> float:
        """Revoke `name`'s credentials (its connections close) and its LLM token; returns the
        seconds until the server enforced it."""
        async with self._lock:
            gone = self._book.revoke(f"agent:{name}")
            self._tokens.revoke(name)
            self._llm_tokens.pop(name, None)
            took = await self._apply() if gone is not None else 0.0
        if gone is not None and self._on_revoked is not None:
            try:
                await self._on_revoked(name)
            except AgentdError as exc:
                log.warning("cleaning up after %s: %s", name, exc)
        if gone is not None:
            self._record(kind, agent=name, decision="revoked", reason=reason, operator=operator)
        return took

    def rows(self) -> list[dict[str, Any]]:
        now = time.time()
        return [
            {
                "agent": i.name,
                "kind": "registered",
                "version": (i.spec or {}).get("version"),
                "lease_expires_in_s": round((i.lease_until or now) - now, 3),
                "public_key": i.public_key,
            }
            for i in sorted(self._book.external(), key=lambda i: i.name)
        ]

    # requests
    async def _answer(self, msg: Msg) -> None:
        tokens = msg.subject[len(self._subjects.prefix) + 1 :].split(".")
        after: Callable[[], Awaitable[Any]] | None = None
        try:
            if len(msg.data) > MAX_API_REQUEST_BYTES:
                raise ControlError(
                    "bad_request",
                    f"request is {len(msg.data)} bytes; the limit is {MAX_API_REQUEST_BYTES}",
                )
            request = decode_request(msg.data)
            result, after = await self._dispatch(tokens, dict(request.args))
            reply = encode_ok(result)
        except ControlError as exc:
            reply = encode_error(exc)
        except Exception as exc:
            log.exception("api request on %s failed", msg.subject)
            reply = encode_error(ControlError("internal", f"{type(exc).__name__}: {exc}"))
        if msg.reply:
            try:
                await msg.respond(reply)
            except Exception:
                log.warning("could not reply on %s", msg.reply)
        else:
            log.info("api request on %s without a reply subject: dropped", msg.subject)
        if after is not None:  # e.g. deregister: answer first, then close the connection
            with contextlib.suppress(Exception):
                await self._nc.flush()
            await after()

    async def _dispatch(
        self, tokens: list[str], args: dict[str, Any]
    ) -> tuple[dict[str, Any], Callable[[], Awaitable[Any]] | None]:
        match tokens:
            case ["api", "register"]:
                return await self._register(args, proven=None), None
            case ["api", "register", name]:
                return await self._register(args, proven=name), None
            case ["api", "heartbeat", name]:
                return self._heartbeat(name, args), None
            case ["api", "deregister", name]:
                self._registered(name)
                leave = functools.partial(
                    self.revoke, name, kind="agent.deregistered", reason="deregistered"
                )
                return {"agent": name, "deregistered": True}, leave
        raise ControlError(
            "unknown_verb",
            "unknown api subject; use api.register, api.heartbeat.<name>, api.deregister.<name>",
        )

    async def _register(self, args: dict[str, Any], *, proven: str | None) -> dict[str, Any]:
        try:
            parsed = RegisterArgs.model_validate(args)
        except ValidationError as exc:
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ControlError("bad_request", f"malformed registration: {fields}") from None
        if proven is None:
            if parsed.name is None or parsed.public_key is None or parsed.token is None:
                raise ControlError("bad_request", "register needs name, public_key and token")
            if not hmac.compare_digest(parsed.token.encode(), self._book.bootstrap_token.encode()):
                raise ControlError("unauthenticated", "the bootstrap token is not valid")
            name = parsed.name
        else:
            if parsed.name not in (None, proven):
                raise ControlError("forbidden", f"{proven} may not register as {parsed.name}")
            name = proven
        answer = self._policy.check(external_subject(name), "api:register", "register")
        if not answer.allowed:
            self._record(
                "agent.registered",
                agent=name,
                decision="denied",
                rule=answer.rule,
                reason=answer.reason,
            )
            raise ControlError("forbidden", f"{name} may not register", rule=answer.rule)
        if name in self._taken():
            raise ControlError("name_taken", f"{name!r} is the name of an agent this daemon runs")
        spec = parsed.spec.model_dump()
        async with self._lock:
            until = time.time() + self.lease_s
            ident = self._book.register_external(
                name, parsed.public_key if proven is None else None, spec, until
            )
            await self._apply()
        if self._on_registered is not None:
            await self._on_registered(name)
        self._llm_tokens[name] = self._tokens.issue(name)
        self._record(
            "agent.registered",
            agent=name,
            decision="registered",
            rule=answer.rule,
            inputs={"spec": spec, "public_key": ident.public_key},
            lineage={"agent_version": parsed.spec.version, "policy_version": answer.policy_version},
        )
        result: dict[str, Any] = {
            "agent": name,
            "identity": ident.identity,
            "inbox_prefix": agent_inbox_prefix(name),
            "lease_s": self.lease_s,
            "lease_expires_at": until,
            "heartbeat": f"{self._subjects.prefix}.api.heartbeat.{name}",
        }
        if proven is not None:  # the reply goes to the agent's own inbox: safe for a secret
            result["llm_token"] = self._llm_tokens[name]
        return result

    def _registered(self, name: str) -> None:
        if name not in self.names:
            raise ControlError("not_registered", f"{name!r} is not registered (register first)")

    def _heartbeat(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self._registered(name)
        ident = self._book.identities[f"agent:{name}"]
        ident.lease_until = time.time() + self.lease_s
        self._book.save()  # a restarted daemon keeps the lease as renewed
        token = self._llm_tokens.get(name) or self._tokens.issue(name)
        self._llm_tokens[name] = token
        return {"agent": name, "lease_expires_at": ident.lease_until, "llm_token": token}
