"""The daemon's side of identity: the book, the embedded server's users, signed control
requests, and the verbs that issue and revoke credentials (docs/identity.md)."""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from agentd.api import RegistrationService
from agentd.bus import Credentials, Subjects, ensure_inbox_consumer
from agentd.config import Config, external_subject
from agentd.control import READ_ONLY_VERBS, ControlPlane, ControlRequest
from agentd.daemon._authority import Authority
from agentd.daemon._fleet import AgentFleet
from agentd.daemon._recorder import Recorder
from agentd.errors import ControlError
from agentd.identity import (
    IdentityBook,
    MemoryTokenBook,
    NonceCache,
    ServerAuth,
    TokenBook,
    client_ssl_context,
    verify_request,
)
from agentd.router import HookDecision

__all__ = ["DaemonIdentity"]

log = logging.getLogger("agentd.identity")

DEFAULT_OPERATOR = "local"


class DaemonIdentity:
    """Everything identity needs from (and gives to) the daemon's services."""

    def __init__(self, config: Config, subjects: Subjects, authority: Authority) -> None:
        self.config = config
        self.subjects = subjects
        self.authority = authority
        state = config.daemon.state_dir
        self.book = IdentityBook(state, subjects, config.identity.bootstrap_token_file)
        self.default_operator_creds = self.book.ensure_operator(DEFAULT_OPERATOR, "admin")
        # the LLM gateway's book once it is connected (DaemonIdentity.tokens is the seam)
        self.tokens: TokenBook = MemoryTokenBook()
        # nonces of signed state-changing control requests, so none runs twice (a replay)
        self.nonces = NonceCache()
        self.server: ServerAuth | None = None
        self.registration: RegistrationService | None = None
        self.fleet: AgentFleet | None = None
        self.record: Callable[..., None] = lambda kind, **fields: None
        self._tg: TaskGroup | None = None
        self._stopped = anyio.Event()

    @property
    def daemon_credentials(self) -> Credentials:
        return self.book.daemon

    @property
    def tls(self) -> ssl.SSLContext | None:
        return client_ssl_context(self.config.bus.tls)

    def attach_server(
        self,
        config_file: Path,
        render_config: Callable[[str], str],
        server_pid: Callable[[], int | None],
        url: str,
    ) -> None:
        """Manage the embedded server's users; writes its config now."""
        self.server = ServerAuth(
            self.book,
            config_file=config_file,
            render_config=render_config,
            server_pid=server_pid,
            url=url,
            tls=self.tls,
        )
        self.server.write()

    async def apply(self) -> float:
        """Make NATS enforce the book now (embedded server); external NATS: see deploy/nats."""
        if self.server is None:
            return 0.0
        return await self.server.apply()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await self._stopped.wait()
            tg.cancel_scope.cancel()

    async def shutdown(self) -> None:
        self._stopped.set()

    # registered agents
    def registration_service(
        self, nc: Client, js: JetStreamContext, fleet: AgentFleet, recorder: Recorder
    ) -> RegistrationService:
        """The registration API (agentd.api.*): a registered agent gets an inbox consumer like
        a configured one, and loses it when revoked."""
        config, subjects = self.config, self.subjects

        async def registered(name: str) -> None:
            await ensure_inbox_consumer(
                js,
                subjects,
                name,
                ack_wait_s=config.inbox.ack_wait_s,
                max_deliver=config.inbox.max_deliver,
            )

        async def revoked(name: str) -> None:
            with contextlib.suppress(NotFoundError):
                await js.delete_consumer(subjects.inbox_stream, subjects.inbox_consumer(name))

        self.registration = RegistrationService(
            nc,
            subjects,
            book=self.book,
            apply=self.apply,
            tokens=self.tokens,
            policy=self.authority,
            record=recorder.record,
            lease_s=config.identity.lease_s,
            check_s=config.identity.lease_check_s,
            taken=lambda: fleet.names,
            on_registered=registered,
            on_revoked=revoked,
        )
        return self.registration

    def policy_subject(self, agent: str) -> str:
        """Whom policy sees for `agent`: `ext:<name>` for an external agent (registered or
        pre-authorized), as registration and the LLM gateway do; else the agent's name."""
        ident = self.book.identities.get(f"agent:{agent}")
        return external_subject(agent) if ident is not None and ident.external else agent

    def registered_tools(self, agent: str) -> list[str] | None:
        """The tools a registered agent declared (policy still decides each call)."""
        ident = self.book.identities.get(f"agent:{agent}")
        if ident is None or not ident.external or ident.spec is None:
            return None
        return [str(t) for t in ident.spec.get("tools", [])]

    # replicas
    async def agent_credentials(self, agent: str) -> Path:
        """The credentials file of `agent`'s replicas, issued (and applied) on first use."""
        _, new = self.book.ensure_agent(agent)
        if new:
            await self.apply()
        return self.book.creds_path(f"agent:{agent}")

    async def forget_agent(self, agent: str) -> None:
        """An agent removed from the fleet (a spawned instance that ended): its credentials
        and token end with it."""
        self.tokens.revoke(agent)
        if self.book.revoke(f"agent:{agent}") is not None:
            await self.apply()

    # the control plane
    def authenticate(self, subject: str, body: bytes, headers: dict[str, str] | None) -> str:
        """The operator who signed the request; a state-changing verb's nonce is accepted once
        (read-only verbs may be replayed within the signature's window: READ_ONLY_VERBS)."""
        speaker = verify_request(self.book, subject, body, headers)
        verb = subject[len(self.subjects.ctl("")) :]
        if verb not in READ_ONLY_VERBS:
            try:
                self.nonces.claim(speaker)
            except ControlError as exc:
                log.warning("refused %s signed by operator %s: %s", verb, speaker.name, exc)
                self.record(
                    "control.command",
                    operator=speaker.name,
                    decision="denied",
                    rule="replay",
                    reason=str(exc),
                    verb=verb,
                )
                raise
        return speaker.name

    def authorize(self, operator: str, verb: str) -> HookDecision:
        """Policy for (operator:<name>, ctl:<verb>), capped by the role the operator's
        credentials were issued with (docs/identity.md, "Roles"): the issued role is the most
        they may do; policy.csv may deny them more, never grant more. Where no rule names the
        operator at all, the issued role decides."""
        answer = self.authority.check(f"operator:{operator}", f"ctl:{verb}", verb)
        ident = self.book.identities.get(f"operator:{operator}")
        role = ident.role if ident is not None else None
        if role is None:
            return answer if answer.allowed else self.authority.authorize_verb(operator, verb)
        by_role = self.authority.check(f"role:{role}", f"ctl:{verb}", verb)
        if answer.allowed and not by_role.allowed:
            reason = (
                f"their credentials were issued with role {role!r}, which may not; policy.csv "
                f"would allow it ({answer.rule}) but cannot widen an issued role"
            )
            log.warning("refused %s to operator %s: %s", verb, operator, reason)
            self.authority.refuse_verb(operator, verb, answer, reason)
        if answer.allowed:
            return answer
        if answer.rule.startswith("model.conf") and by_role.allowed:
            return by_role
        return self.authority.authorize_verb(operator, verb)

    def role_conflict(self, name: str, role: str | None) -> str | None:
        """A warning when policy.csv links operator `name` to roles other than `role`."""
        if role is None:
            return None
        linked = [r for r in self.authority.roles_of(f"operator:{name}") if r != f"role:{role}"]
        beyond = [r for r in linked if r not in self.authority.roles_of(f"role:{role}")]
        if not beyond:
            return None
        return (
            f"policy.csv also gives operator:{name} {', '.join(beyond)}; the issued role "
            f"{role!r} is authoritative: they get at most what {role!r} may do"
        )

    def register_verbs(self, control: ControlPlane) -> None:
        control.register("agents", self.agents)
        control.register("agents.revoke", self.agents_revoke)
        control.register("agents.issue", self.agents_issue)
        control.register("operators.add", self.operators_add)
        control.register("operators.revoke", self.operators_revoke)

    def _command(self, request: ControlRequest, verb: str, **fields: Any) -> None:
        self.record(
            "control.command",
            operator=request.operator,
            decision=verb,
            inputs=dict(request.args),
            **fields,
        )

    async def agents(self, request: ControlRequest) -> list[dict[str, Any]]:
        """Spawned and configured agents with their identities, and registered agents with
        their leases."""
        rows: list[dict[str, Any]] = []
        if self.fleet is not None:
            for name, record in sorted(self.fleet.agents.items()):
                ident = self.book.identities.get(f"agent:{name}")
                rows.append(
                    {
                        "agent": name,
                        "kind": "spawned" if record.spawned_by else "configured",
                        "version": record.agent.version,
                        "replicas": len(record.replicas),
                        "state": record.state,
                        "lease_expires_in_s": None,
                        "public_key": ident.public_key if ident else None,
                    }
                )
        if self.registration is not None:
            rows.extend(self.registration.rows())
        return rows

    async def agents_revoke(self, request: ControlRequest) -> dict[str, Any]:
        name = _text(request, "agent")
        self._command(request, "agents.revoke", agent=name)
        started = time.monotonic()
        if self.registration is not None and name in self.registration.names:
            await self.registration.revoke(
                name, kind="agent.revoked", reason="revoked", operator=request.operator
            )
            return {"agent": name, "revoked_in_s": round(time.monotonic() - started, 4)}
        if self.book.revoke(f"agent:{name}") is None:
            raise ControlError("unknown_agent", f"no agent {name!r} holds credentials")
        self.tokens.revoke(name)
        await self.apply()
        took = time.monotonic() - started
        self.record(
            "agent.revoked",
            agent=name,
            decision="revoked",
            reason="revoked",
            operator=request.operator,
        )
        fleet = self.fleet
        if fleet is not None and name in fleet.agents and self._tg is not None:
            # its connections are closed already; its replicas now drain and stop
            reason = f"revoked by {request.operator}"
            self._tg.start_soon(_stop_quietly, fleet, name, reason)
        return {"agent": name, "revoked_in_s": round(took, 4)}

    async def agents_issue(self, request: ControlRequest) -> dict[str, Any]:
        name = _text(request, "agent")
        if self.fleet is not None and name in self.fleet.agents:
            raise ControlError("name_taken", f"{name!r} is an agent this daemon runs")
        self._command(request, "agents.issue", agent=name)
        path = self.book.issue_external(name)
        await self.apply()
        return {"agent": name, "creds": str(path)}

    async def operators_add(self, request: ControlRequest) -> dict[str, Any]:
        name = _text(request, "name")
        role = request.args.get("role")
        if role is not None and not isinstance(role, str):
            raise ControlError("bad_request", "argument 'role' must be a string")
        warning = self.role_conflict(name, role)
        if warning is not None:
            log.warning("operators add %s: %s", name, warning)
        self._command(request, "operators.add", target=name, role=role, reason=warning)
        path = self.book.issue_operator(name, role)
        await self.apply()
        result: dict[str, Any] = {"operator": name, "role": role, "creds": str(path)}
        if warning is not None:
            result["warning"] = warning
        return result

    async def operators_revoke(self, request: ControlRequest) -> dict[str, Any]:
        name = _text(request, "name")
        if name == request.operator:
            raise ControlError("bad_request", "an operator cannot revoke their own credentials")
        self._command(request, "operators.revoke", target=name)
        if self.book.revoke(f"operator:{name}") is None:
            raise ControlError("unknown_operator", f"no operator {name!r} holds credentials")
        took = await self.apply()
        return {"operator": name, "revoked_in_s": round(took, 4)}


def _text(request: ControlRequest, name: str) -> str:
    value = request.args.get(name)
    if not isinstance(value, str) or not value:
        raise ControlError("bad_request", f"missing argument {name!r} (a string)")
    return value


async def _stop_quietly(fleet: AgentFleet, name: str, reason: str) -> None:
    try:
        await fleet.scale(name, 0, reason=reason)
    except ControlError as exc:
        log.warning("stopping revoked agent %s: %s", name, exc)
