"""The envelope of a message between agents, as stored in an inbox and seen by a worker."""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = ["Message", "RunResult", "new_id"]


def new_id() -> str:
    """A random, URL-safe id for messages and runs."""
    return uuid.uuid4().hex


class Message(BaseModel):
    """One message to an agent. `id` is the dedupe key (Nats-Msg-Id) across redeliveries."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    id: str = Field(default_factory=new_id, pattern=r"^[A-Za-z0-9_=-]{1,128}$")
    sender: str = Field(alias="from", min_length=1, max_length=200)
    to: str = Field(min_length=1, max_length=64)
    conversation_id: str = Field(default_factory=new_id, min_length=1, max_length=200)
    payload: JsonValue = None
    reply_to: str | None = Field(None, max_length=256)
    sent_at: float = Field(default_factory=time.time)
    whole_state: bool = False
    """The sender wants the run's whole output state, not its reply (for a graph with
    messages, the last AI message's content): `agentctl ask --state`."""

    def to_json(self) -> bytes:
        # left out unless set, so that replicas from before the field read the message too
        leave_out = None if self.whole_state else {"whole_state"}
        return self.model_dump_json(by_alias=True, exclude=leave_out).encode()


class RunResult(BaseModel):
    """What a worker publishes to a message's `reply_to` once its run has finished."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    message_id: str
    run_id: str
    agent: str
    replica: str
    output: JsonValue = None
    error: str | None = None
    duration_s: float = 0.0
    received_at: float | None = None
    """Wall-clock time the replica received the message (delivery latency = this - sent_at)."""

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def jsonable(value: Any) -> JsonValue:
    """Best-effort conversion of a graph's output state to JSON values."""
    from pydantic_core import to_jsonable_python

    result: JsonValue = to_jsonable_python(value, fallback=str)
    return result
