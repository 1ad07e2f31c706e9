"""The decision record: what every component writes to the decision log.

A `DecisionRecord` is immutable and closed (`extra="forbid"`). Its canonical form (sorted keys, no
whitespace, UTF-8, fields that are None left out) is what the log stores and hashes; see
`agentd.trace.verifier.canonical_json`. Treat `inputs`, `outputs` and `attributes` as immutable
too: the canonical form is computed once and cached, so a dict changed in place after the record
was built would not reach the log.

Record ids are UUIDv7 strings (`new_record_id`): 48 bits of Unix milliseconds, then a counter that
keeps ids made in the same millisecond by this process in order, then random bits. They sort by
time as plain strings, so the id index grows at its end.

Kinds are dotted names from `RECORD_KINDS`; `x.<name>` is free for extensions.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PrivateAttr, model_validator

from .verifier import canonical_json

__all__ = [
    "RECORD_KINDS",
    "DecisionRecord",
    "Lineage",
    "new_record_id",
]

RECORD_KINDS: frozenset[str] = frozenset(
    {
        # model calls through the LLM gateway
        "llm.call",
        # tool gateway, one record per step of a call
        "tool.requested",
        "tool.denied",
        "tool.approval_requested",
        "tool.approved",
        "tool.rejected",
        "tool.executed",
        "tool.failed",
        # router
        "message.routed",
        "message.refused",
        "message.dead_lettered",
        # policy engine
        "policy.reloaded",
        # supervisor: agent replicas
        "agent.spawned",
        "agent.exited",
        "agent.restarted",
        "agent.failed",
        "agent.scaled",
        # registration API (external agents)
        "agent.registered",
        "agent.deregistered",
        # supervisor: model-pool replicas
        "model.started",
        "model.stopped",
        "model.health_changed",
        # control plane: every operator command, with `operator` set
        "control.command",
    }
)

_ID_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._:-]{0,127}$")
_EXTENSION_KIND = re.compile(r"^x\.[a-z0-9_]+(\.[a-z0-9_]+)*$")
_id_lock = threading.Lock()
_id_last_ms = 0
_id_counter = 0


def new_record_id() -> str:
    """A fresh UUIDv7 string; ids from one process sort in the order they were made."""
    global _id_last_ms, _id_counter
    with _id_lock:
        ms = time.time_ns() // 1_000_000
        if ms > _id_last_ms:
            _id_last_ms, _id_counter = ms, int.from_bytes(os.urandom(2), "big") & 0x3FF
        else:
            # Same millisecond (or the clock stepped back): count up so order still holds; the
            # 12-bit counter starts low so it has room, and spills into the next millisecond.
            _id_counter += 1
            if _id_counter > 0xFFF:
                _id_last_ms, _id_counter = _id_last_ms + 1, 0
        ms, counter = _id_last_ms, _id_counter
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class Lineage(BaseModel):
    """What produced a decision: versions an auditor needs to reproduce or explain it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_version: str | None = None
    """Hash of the agent spec and graph module."""
    model_id: str | None = None
    model_revision: str | None = None
    prompt_hash: str | None = None
    """Hash of the prompt template."""
    policy_version: str | None = None


class DecisionRecord(BaseModel):
    """One decision, as stored in the decision log.

    Only `kind` is required: `id` and `ts` (seconds since the epoch) default to now. `inputs`,
    `outputs` and `attributes` hold JSON values; secrets are removed and large payloads replaced
    by digests by a `Redactor` before the record is stored.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=new_record_id)
    ts: float = Field(default_factory=time.time)
    kind: str
    agent: str | None = None
    replica: str | None = None
    run_id: str | None = None
    conversation_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    operator: str | None = None
    """Who gave a control-plane command."""
    inputs: JsonValue = None
    outputs: JsonValue = None
    decision: str | None = Field(default=None, max_length=64)
    """The verdict, e.g. allow, deny, approve, reject, ok, error."""
    rule: str | None = None
    """The policy rule that decided."""
    reason: str | None = None
    lineage: Lineage | None = None
    attributes: dict[str, JsonValue] | None = None

    _canonical: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not _ID_PATTERN.match(self.id):
            raise ValueError(f"record id {self.id!r} must be 1-128 characters of [0-9A-Za-z._:-]")
        if self.kind not in RECORD_KINDS and not _EXTENSION_KIND.match(self.kind):
            raise ValueError(f"unknown record kind {self.kind!r}; known: {sorted(RECORD_KINDS)}")
        if not math.isfinite(self.ts):
            raise ValueError("ts must be a finite number of seconds since the epoch")
        # Serializing now turns NaN payloads or lone surrogates into a validation error at the
        # producer instead of a failed batch in the log.
        try:
            self.canonical_json()
        except (ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"record cannot be serialized canonically: {exc}") from exc
        return self

    def canonical_json(self) -> str:
        """The canonical JSON text that the log stores and hashes (cached)."""
        if self._canonical is None:
            self._canonical = canonical_json(self.to_json_object()).decode("utf-8")
        return self._canonical

    def to_json_object(self) -> dict[str, Any]:
        """The record as a JSON object, None-valued fields left out."""
        data = self.model_dump(mode="json")
        out = {k: v for k, v in data.items() if v is not None}
        lineage = out.get("lineage")
        if isinstance(lineage, dict):
            out["lineage"] = {k: v for k, v in lineage.items() if v is not None}
        return out

    @classmethod
    def from_canonical(cls, text: str | bytes) -> DecisionRecord:
        """Parse a stored body back into a record."""
        return cls.model_validate_json(text)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Copy, validated again so the copy's canonical form matches its fields."""
        data = self.model_dump()
        data.update(update or {})
        return type(self).model_validate(data)
