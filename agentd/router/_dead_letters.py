"""Dead letters: messages whose runs failed `max_deliver` times, kept with their last error.

Only the daemon writes the dead-letter stream. A replica that gives up on a message asks, on
`agentd.dead.<agent>`, with the message's sequence in its agent's inbox; the daemon copies that
message from the inbox itself (so the sender, recipient and body are the router's, never the
replica's word), records `message.dead_lettered`, and answers. `agentctl dlq list` shows them;
`agentctl dlq replay SEQ` sends one through the router again: the original sender -> recipient
is decided under the policy in force now and recorded like any message (same message id, so
lineage holds; a fresh dedupe id, so JetStream does not drop it as a duplicate of the
original), and it leaves the dead-letter stream only once it is back in an inbox.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from agentd.bus import (
    MAX_JSON_DEPTH,
    BoundedJSONError,
    Message,
    Subjects,
    json_depth,
    loads_bounded,
    serve_each,
)
from agentd.errors import ControlError

if TYPE_CHECKING:
    from agentd.router._router import Router

MAX_DEAD_LETTER_BYTES = 1 << 20

__all__ = ["DeadLetters"]

log = logging.getLogger("agentd.router")

MAX_REQUEST_BYTES = 4096
MAX_ERROR_CHARS = 1000


class DecisionSink(Protocol):
    def __call__(self, kind: str, **fields: Any) -> None: ...


class DeadLetters:
    """The dead-letter stream: written on replicas' requests, read and replayed by operators."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        subjects: Subjects,
        *,
        router: Router,
        record: DecisionSink | None = None,
    ) -> None:
        self._nc = nc
        self._js = js
        self._subjects = subjects
        self._router = router
        self._record = record
        self._stopped = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with serve_each(self._nc, self._subjects.dead_letter_request_all, self._handle):
            task_status.started()
            await self._stopped.wait()

    async def shutdown(self) -> None:
        self._stopped.set()

    async def _handle(self, msg: Msg) -> None:
        agent = msg.subject.rsplit(".", 1)[-1]
        try:
            answer: dict[str, Any] = {"ok": True, **await self.keep(agent, msg.data)}
        except ControlError as exc:
            answer = {"ok": False, "error": {"code": exc.code, "message": str(exc)}}
        except Exception as exc:
            log.exception("dead-lettering for %s failed", agent)
            answer = {"ok": False, "error": {"code": "internal", "message": str(exc)}}
        if msg.reply:
            await msg.respond(json.dumps(answer).encode())

    async def keep(self, agent: str, request: bytes) -> dict[str, Any]:
        """Copy message `seq` of `agent`'s inbox into the dead-letter stream."""
        seq, error, deliveries = _parse_request(request)
        inbox = self._subjects.inbox_stream
        try:
            raw = await self._js.get_msg(inbox, seq)
        except NotFoundError:
            raise ControlError("not_found", f"no message {seq} in the inbox stream") from None
        if raw.subject != self._subjects.inbox(agent):
            # another agent's message: a replica may give up only on its own work
            raise ControlError("forbidden", f"message {seq} is not in {agent}'s inbox")
        headers = {k: v for k, v in (raw.headers or {}).items() if not k.startswith("Nats-")}
        message_id = _message_id(raw.data)
        headers.update(
            {
                "Agentd-Agent": agent,
                "Agentd-Error": error,
                "Agentd-Deliveries": str(deliveries),
                "Agentd-Inbox-Seq": str(seq),
                "Nats-Msg-Id": f"dlq-{seq}",
            }
        )
        ack = await self._js.publish(
            self._subjects.dead_letter(agent), raw.data or b"", headers=headers
        )
        if self._record is not None:
            self._record(
                "message.dead_lettered",
                agent=agent,
                decision="dead_lettered",
                inputs={"message_id": message_id, "inbox_seq": seq},
                outputs={"dlq_seq": ack.seq, "error": error, "deliveries": deliveries},
            )
        return {"dlq_seq": ack.seq, "duplicate": bool(ack.duplicate)}

    async def list(self, *, agent: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest `limit` dead letters (of `agent`, if given), oldest first."""
        stream = self._subjects.dead_letter_stream
        info = await self._js.stream_info(stream)
        entries: list[dict[str, Any]] = []
        seq = info.state.last_seq
        while seq >= info.state.first_seq and seq > 0 and len(entries) < limit:
            try:
                raw = await self._js.get_msg(stream, seq)
            except NotFoundError:  # replayed (deleted) entries leave gaps
                seq -= 1
                continue
            entry = self._describe(raw.seq or seq, raw.subject or "", raw.data, raw.headers)
            if agent is None or entry["agent"] == agent:
                entries.append(entry)
            seq -= 1
        entries.reverse()
        return entries

    async def replay(self, seq: int) -> dict[str, Any]:
        stream = self._subjects.dead_letter_stream
        try:
            raw = await self._js.get_msg(stream, seq)
        except NotFoundError:
            raise ControlError("not_found", f"no dead letter with sequence {seq}") from None
        try:
            if json_depth(raw.data or b"", stop_after=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
                raise ValueError(f"it nests deeper than {MAX_JSON_DEPTH} levels")
            message = Message.model_validate_json(raw.data or b"")
        except ValueError as exc:
            raise ControlError(
                "bad_message",
                f"dead letter {seq} is not a valid message and cannot be replayed: {exc}",
            ) from None
        # decided again, sender -> recipient, under today's policy (raises when refused)
        routed = await self._router.route(
            message,
            raw.headers,
            dedupe_id=f"{message.id}-replay-{seq}",
            replay_of=seq,
        )
        await self._js.delete_msg(stream, seq)
        return {"seq": seq, "message_id": message.id, "to": message.to, "inbox_seq": routed.seq}

    def _describe(
        self, seq: int, subject: str, data: bytes | None, headers: dict[str, str] | None
    ) -> dict[str, Any]:
        headers = headers or {}
        entry: dict[str, Any] = {
            "seq": seq,
            "agent": headers.get("Agentd-Agent") or subject.rsplit(".", 1)[-1],
            "error": headers.get("Agentd-Error"),
            "deliveries": int(headers.get("Agentd-Deliveries", "0") or 0),
        }
        try:
            body = loads_bounded(data or b"", what="dead letter", max_bytes=MAX_DEAD_LETTER_BYTES)
        except BoundedJSONError:
            entry.update(message_id=None, payload=(data or b"")[:200].decode(errors="replace"))
            return entry
        if isinstance(body, dict):
            entry.update(
                message_id=body.get("id"),
                sender=body.get("from"),
                conversation_id=body.get("conversation_id"),
                payload=body.get("payload"),
            )
        return entry


def _parse_request(data: bytes) -> tuple[int, str, int]:
    try:
        body = loads_bounded(data, what="the dead-letter request", max_bytes=MAX_REQUEST_BYTES)
    except BoundedJSONError as exc:
        raise ControlError("bad_request", str(exc)) from None
    if not isinstance(body, dict):
        raise ControlError("bad_request", "request must be a JSON object")
    seq, deliveries, error = body.get("seq"), body.get("deliveries", 1), body.get("error", "")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq <= 0:
        raise ControlError("bad_request", "seq must be a positive integer (the inbox sequence)")
    if not isinstance(deliveries, int) or isinstance(deliveries, bool) or deliveries < 0:
        raise ControlError("bad_request", "deliveries must be a non-negative integer")
    if not isinstance(error, str):
        raise ControlError("bad_request", "error must be a string")
    return seq, error[:MAX_ERROR_CHARS].replace("\n", " "), deliveries


def _message_id(data: bytes | None) -> str | None:
    try:
        body = loads_bounded(data or b"", what="message", max_bytes=MAX_DEAD_LETTER_BYTES)
    except BoundedJSONError:
        return None
    return body.get("id") if isinstance(body, dict) else None
