"""The decision record: what every component writes to the decision log.

A `DecisionRecord` is immutable and closed (`extra="forbid"`). Its *body* is the compact JSON
text that the log stores and hashes: fields in declaration order, fields that are None left out,
UTF-8, produced by pydantic's serializer (`body_json`). The log hashes the stored bytes verbatim
and proofs carry them verbatim, so no verifier ever has to reproduce a serializer (float formats
differ between languages; Certificate Transparency hashes its entries the same way). Non-finite
numbers inside payloads are written as null. Treat `inputs`, `outputs` and `attributes` as
immutable: the body is computed once and cached, so a dict changed in place after the record was
serialized would not reach the log.

Record ids are UUIDv7 strings (`new_record_id`): 48 bits of Unix milliseconds, then a counter that
keeps ids made in the same millisecond by this process in order, then random bits. They sort by
time as plain strings, so the id index grows at its end (random ids work, but cost more to index).

Kinds are dotted names from `RECORD_KINDS`; `x.<name>` is free for extensions.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Annotated, Any, Self, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue
from pydantic_core import PydanticSerializationError

__all__ = [
    "LEGACY_KINDS",
    "RECORD_KINDS",
    "current_kind",
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
        # agentd's MCP endpoint refused an HTTP request before MCP saw it (no or an unknown
        # token, a body over its bounds): `decision` says which, `agent` is set once known
        "mcp.request_refused",
        # router
        "message.routed",
        "message.refused",
        "message.dead_lettered",
        # policy engine
        "policy.reloaded",
        # supervisor: agent replicas (and the embedded nats-server, without `agent`)
        "agent.spawned",
        "agent.ready",
        "agent.unhealthy",
        "agent.exited",
        "agent.restarted",
        "agent.failed",
        "agent.scaled",
        # who owns an agent's replica count: "off" when an operator pins it (a manual scale,
        # `agentctl autoscale NAME off`), "on" when `agentctl autoscale NAME on` hands it back
        "agent.autoscale",
        # registration API (external agents)
        "agent.registered",
        "agent.deregistered",
        # identity: credentials revoked by an operator, or a registration's lease lapsed
        "agent.revoked",
        "agent.lease_expired",
        # outside LLM-gateway tokens (agentctl tokens issue / revoke), with the operator
        "token.issued",
        "token.revoked",
        # supervisor: model-pool replicas
        "model.started",
        "model.stopped",
        "model.health_changed",
        "model.scaled",
        # cluster (several hosts): the placer lease changing hands, hosts joining and lost,
        # the placer's placement of an agent's replicas, a host starting and stopping its share
        "cluster.placer_acquired",
        "cluster.placer_lost",
        "cluster.node_joined",
        "cluster.node_lost",
        "cluster.placed",
        "cluster.reconciled",
        # control plane: every operator command, with `operator` set
        "control.command",
        # the daemon's configuration file read again (SIGHUP / `agentctl reload`)
        "config.reloaded",
        # agent replicas, one record per step of each run (an inbox message handled): `run_id`,
        # `conversation_id`, `replica` and `lineage` set; started carries the message id, the
        # sender and the delivery attempt; finished and failed carry `duration_s` (failed also
        # the error as `reason`, decision "error", or "cancelled" when the replica drained)
        "run.started",
        "run.finished",
        "run.failed",
        # the daemon's trace ingest refused a record a replica published (malformed, naming
        # another agent than its subject, of a kind agents may not write, or dated outside the
        # clock-skew window): `agent` is the subject's, `reason` says why, the body itself is
        # kept only as a digest
        "trace.rejected",
    }
)

LEGACY_KINDS: dict[str, str] = {
    "x.child.ready": "agent.ready",
    "x.child.unhealthy": "agent.unhealthy",
    "x.config.reloaded": "config.reloaded",
}
"""Kinds older daemons wrote as extensions, and the names they have now. Old logs keep them
(bodies are hashed verbatim, and `x.*` kinds stay valid), so they stay readable and verifiable;
readers that group by kind map them with `current_kind`."""


def current_kind(kind: str) -> str:
    """The kind a record of `kind` is written as today (old extension names mapped)."""
    return LEGACY_KINDS.get(kind, kind)


# the record's free-text fields: redaction scans them, the ingest's wire check types them
TEXT_FIELDS = (
    "agent",
    "source",
    "replica",
    "run_id",
    "conversation_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "operator",
    "decision",
    "rule",
    "reason",
)
_ID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z._:-]{0,127}$"
_RESERIALIZE = re.compile(r"NaN|Infinity|\\/|\\u[dD][89a-fA-F]")
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
    spec_hash: str | None = None
    """Hash of the agent's agent.toml alone."""
    graph_hash: str | None = None
    """Hash of the Python module that builds the agent's graph alone."""
    model_id: str | None = None
    model_revision: str | None = None
    prompt_hash: str | None = None
    """Hash of the prompt template."""
    policy_version: str | None = None


def _check_kind(kind: str) -> str:
    if kind not in RECORD_KINDS and not _EXTENSION_KIND.match(kind):
        raise ValueError(f"unknown record kind {kind!r}; known: {sorted(RECORD_KINDS)}")
    return kind


class DecisionRecord(BaseModel):
    """One decision, as stored in the decision log.

    Only `kind` is required: `id` and `ts` (seconds since the epoch) default to now. `inputs`,
    `outputs` and `attributes` hold JSON values; secrets are removed and large payloads replaced
    by digests by a `Redactor` before the record is stored.
    """

    # Checks are field constraints (run in pydantic's core), not a model validator: this model
    # is validated once per message on the daemon's ingest path.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="null")

    id: str = Field(default_factory=new_record_id, pattern=_ID_PATTERN)
    ts: float = Field(default_factory=time.time, allow_inf_nan=False)
    kind: Annotated[str, AfterValidator(_check_kind)]
    agent: str | None = None
    source: str | None = None
    """The identity the record arrived from: `daemon` for the daemon's own records,
    `agent:<name>` for records ingested from `<prefix>.trace.<name>` (set by the ingest, never
    trusted from the publisher)."""
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

    # A slot, not a PrivateAttr: pydantic initializes private attributes in Python for every
    # instance, which would cost more than the validation itself.
    __slots__ = ("_body",)

    def body_json(self) -> str:
        """The JSON text the log stores and hashes (computed once, then cached).

        Raises ValueError when the record cannot be serialized (a lone surrogate in a string).
        """
        try:
            # object.__getattribute__ skips pydantic's __getattr__ fallback for an empty slot.
            return cast(str, object.__getattribute__(self, "_body"))
        except AttributeError:
            pass
        try:
            text = self.__pydantic_serializer__.to_json(self, exclude_none=True).decode()
        except PydanticSerializationError as exc:
            raise ValueError(f"record {self.id} cannot be serialized: {exc}") from exc
        object.__setattr__(self, "_body", text)
        return text

    @classmethod
    def from_body(cls, text: str | bytes) -> DecisionRecord:
        """Parse a stored body (or any JSON form of a record) back into a record."""
        return cls.model_validate_json(text)

    @classmethod
    def from_wire(cls, data: bytes | str) -> DecisionRecord:
        """Validate a record received as JSON and keep that exact text as its body.

        The log hashes bodies verbatim, so any JSON text that validates is a faithful body and
        re-serializing it would only cost time on the daemon's ingest path. Text with `NaN` or
        `Infinity` (non-standard JSON that pydantic accepts), an escaped '/' or an escaped
        surrogate pair is re-serialized instead: stored bodies stay standard JSON, and their
        escapes stay the ones the `Redactor`'s whole-record scan can undo.
        """
        record = cls.model_validate_json(data)
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if _RESERIALIZE.search(text) is None:
            object.__setattr__(record, "_body", text)
        return record

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Copy with changes, validated again (pydantic's model_copy would skip validation)."""
        data = self.model_dump()
        data.update(update or {})
        return type(self).model_validate(data)
