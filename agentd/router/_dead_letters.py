"""Dead letters: messages whose runs failed `max_deliver` times, kept with their last error.

`agentctl dlq list` shows them; `agentctl dlq replay SEQ` puts one back into its agent's inbox
(same message id, so lineage holds; a fresh dedupe id, so JetStream does not drop it as a
duplicate of the original) and removes it from the dead-letter stream.
"""

from __future__ import annotations

from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from agentd.bus import (
    MAX_JSON_DEPTH,
    BoundedJSONError,
    Message,
    Subjects,
    json_depth,
    loads_bounded,
)
from agentd.errors import ControlError

MAX_DEAD_LETTER_BYTES = 1 << 20

__all__ = ["DeadLetters"]


class DeadLetters:
    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self._js = js
        self._subjects = subjects

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
        ack = await self._js.publish(
            self._subjects.inbox(message.to),
            raw.data or b"",
            headers={"Nats-Msg-Id": f"{message.id}-replay-{seq}"},
        )
        await self._js.delete_msg(stream, seq)
        return {"seq": seq, "message_id": message.id, "to": message.to, "inbox_seq": ack.seq}

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
