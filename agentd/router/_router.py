"""The router: `agentd.out.<from>.<to>` -> policy -> the JetStream inbox of `<to>`.

The subject is the identity: the router trusts `<from>` in the subject, never a field in the
body. Each message is stored with Nats-Msg-Id = message id, so a sender that retries after a lost
reply cannot make the same message run twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

from agentd.bus import BoundedJSONError, Message, Subjects, loads_bounded, serve_each
from agentd.errors import ControlError
from agentd.router._policy_hook import AllowAll, PolicyHook
from agentd.telemetry import (
    current_span_ids,
    extract_context,
    inject_nats_headers,
    note_route_decision,
    route_span,
    trace_headers_of,
)

__all__ = ["Routed", "Router", "TaintSource"]

log = logging.getLogger("agentd.router")

# the router's verdicts and the record kind of each (docs/audit.md, "Record kinds")
_KINDS = {"routed": "message.routed", "refused": "message.refused"}


class DecisionSink(Protocol):
    def __call__(self, kind: str, **fields: Any) -> None: ...


MAX_MESSAGE_BYTES = 1 << 20
TAINT_HEADERS = ("Agentd-Taint", "Agentd-Taint-Tool")
"""Set on a stored inbox message by the router only, from its own state: the record that
tainted the sender and that record's tool. Whatever a sender puts there is dropped."""


class TaintMark(Protocol):
    @property
    def record_id(self) -> str: ...
    @property
    def tool(self) -> str: ...
    def fields(self) -> dict[str, Any]: ...


class TaintSource(Protocol):
    """The daemon's record of tainted agents and conversations (agentd.tools.TaintBook)."""

    def of_sender(self, agent: str, conversation_id: str) -> TaintMark | None: ...

    async def taint_delivered(
        self, to: str, conversation_id: str, message_id: str, taint: Any
    ) -> None: ...

    def expect_reply(
        self, reply_to: str, *, asker: str, answerer: str, conversation_id: str
    ) -> None: ...


@dataclass(frozen=True)
class Routed:
    message_id: str
    to: str
    seq: int
    duplicate: bool


class Router:
    """Checks, records and stores every message between agents."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        subjects: Subjects,
        *,
        known_agents: Callable[[], set[str]],
        policy: PolicyHook | None = None,
        on_decision: DecisionSink | None = None,
        taint: TaintSource | None = None,
        policy_subject: Callable[[str], str] | None = None,
    ) -> None:
        self._taint = taint
        # a sender's policy subject: its name, or `ext:<name>` for a registered external agent
        self._subject_of: Callable[[str], str] = policy_subject or (lambda sender: sender)
        self._nc = nc
        self._js = js
        self._subjects = subjects
        self._known_agents = known_agents
        self._policy: PolicyHook = policy or AllowAll()
        self._on_decision = on_decision
        self._stopped = anyio.Event()

    def set_policy(self, policy: PolicyHook) -> None:
        self._policy = policy

    async def route(
        self,
        message: Message,
        headers: dict[str, str] | None = None,
        *,
        dedupe_id: str | None = None,
        replay_of: int | None = None,
    ) -> Routed:
        """Store `message` in its recipient's inbox, or raise ControlError saying why not.

        `headers` are the sender's: its W3C trace context goes into the inbox message as it
        is, so the recipient's run is a child of the sender's run; a message without one (an
        operator's `agentctl send`) starts a trace at this router's `route` span. A replayed
        dead letter passes a fresh `dedupe_id` (else the message id) and its dead-letter
        sequence, which the decision records.
        """
        subject = self._subjects.inbox(message.to)
        taint = (
            self._taint.of_sender(message.sender, message.conversation_id) if self._taint else None
        )
        with route_span(
            message.sender,
            message.to,
            message_id=message.id,
            conversation_id=message.conversation_id,
            subject=subject,
            parent=extract_context(headers),
        ):
            carried = trace_headers_of(headers) or inject_nats_headers() or {}
            extra: dict[str, Any] = {} if replay_of is None else {"replay_of": replay_of}
            extra["tainted"] = taint is not None
            if taint is not None:
                extra.update(taint.fields())
                carried = {**carried, "Agentd-Taint": taint.record_id}
                carried["Agentd-Taint-Tool"] = taint.tool
            return await self._route(
                message, subject, carried, dedupe_id or message.id, extra, taint
            )

    async def _route(
        self,
        message: Message,
        subject: str,
        carried: dict[str, str],
        dedupe_id: str,
        extra: dict[str, Any],
        taint: TaintMark | None = None,
    ) -> Routed:
        if message.to not in self._known_agents():
            self._decide(message, "refused", rule="unknown recipient", **extra)
            raise ControlError(
                "unknown_recipient",
                f"no agent named {message.to!r}",
                agents=sorted(self._known_agents()),
            )
        owner = (
            self._subjects.operator_reply_owner
            if message.sender.startswith("operator:")
            else message.sender
        )
        replies = self._subjects.reply(owner, "")
        if message.reply_to is not None and not (
            message.reply_to.startswith(replies) and len(message.reply_to) > len(replies)
        ):
            # an answer goes back to whoever asked, never to someone else's subject
            self._decide(message, "refused", rule="reply_to outside the sender's replies", **extra)
            raise ControlError(
                "bad_message",
                f"reply_to must be a subject under {replies}<token>, not {message.reply_to!r}",
            )
        answer = self._policy.check(self._subject_of(message.sender), f"agent:{message.to}", "send")
        if not answer.allowed:
            self._decide(
                message,
                "refused",
                rule=answer.rule,
                reason=answer.reason,
                lineage={"policy_version": answer.policy_version},
                **extra,
            )
            raise ControlError(
                "policy_denied",
                f"{message.sender} may not send to {message.to}: {answer.reason or answer.rule}",
                rule=answer.rule,
            )
        if self._taint is not None:
            if taint is not None:
                # before the message is stored: the recipient's first call must find it tainted
                await self._taint.taint_delivered(
                    message.to, message.conversation_id, message.id, taint
                )
            if message.reply_to is not None and not message.sender.startswith("operator:"):
                # the answer will carry what the recipient's run read back to the sender
                self._taint.expect_reply(
                    message.reply_to,
                    asker=message.sender,
                    answerer=message.to,
                    conversation_id=message.conversation_id,
                )
        ack = await self._js.publish(
            subject, message.to_json(), headers={**carried, "Nats-Msg-Id": dedupe_id}
        )
        self._decide(
            message,
            "routed",
            rule=answer.rule,
            seq=ack.seq,
            duplicate=ack.duplicate,
            lineage={"policy_version": answer.policy_version},
            **extra,
        )
        return Routed(message.id, message.to, ack.seq, bool(ack.duplicate))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with serve_each(self._nc, self._subjects.out_all, self._handle, queue="router"):
            task_status.started()
            await self._stopped.wait()

    async def shutdown(self) -> None:
        self._stopped.set()

    async def _handle(self, msg: Msg) -> None:
        _, _, sender, to = msg.subject.rsplit(".", 3)
        try:
            message = self._parse(msg.data, sender, to)
            routed = await self.route(message, msg.headers)
            reply: dict[str, Any] = {"ok": True, "id": routed.message_id, "seq": routed.seq}
            reply["duplicate"] = routed.duplicate
        except ControlError as exc:
            reply = {"ok": False, "error": {"code": exc.code, "message": str(exc), **exc.details}}
        except Exception as exc:
            log.exception("routing %s failed", msg.subject)
            reply = {"ok": False, "error": {"code": "internal", "message": str(exc)}}
        if msg.reply:
            try:
                await msg.respond(json.dumps(reply, default=str).encode())
            except Exception:
                log.warning("could not reply on %s to %s", msg.reply, msg.subject)

    def _parse(self, data: bytes, sender: str, to: str) -> Message:
        if len(data) > MAX_MESSAGE_BYTES:
            raise ControlError("bad_message", f"message is {len(data)} bytes; the limit is 1 MiB")
        try:
            raw = loads_bounded(data, what="message", max_bytes=MAX_MESSAGE_BYTES)
        except BoundedJSONError as exc:
            raise ControlError("bad_message", str(exc)) from None
        if not isinstance(raw, dict):
            raise ControlError("bad_message", "message must be a JSON object")
        # the subject names who speaks and to whom; the body cannot override it
        raw["from"] = sender
        raw["to"] = to
        try:
            return Message.model_validate(raw)
        except ValidationError as exc:
            fields = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ControlError("bad_message", f"malformed message: {fields}") from None

    def _decide(self, message: Message, decision: str, *, rule: str, **fields: Any) -> None:
        lineage = fields.get("lineage") or {}
        note_route_decision(
            decision,
            rule=rule,
            policy_version=lineage.get("policy_version"),
            reason=fields.get("reason"),
        )
        if self._on_decision is None:
            return
        try:
            self._on_decision(
                _KINDS[decision],
                **current_span_ids(),
                agent=message.to,
                conversation_id=message.conversation_id,
                decision=decision,
                rule=rule,
                inputs={"message_id": message.id, "from": message.sender, "to": message.to},
                **fields,
            )
        except Exception:
            log.exception("recording a routing decision failed")
