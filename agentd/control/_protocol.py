"""The daemon's side of the control-plane envelope: a request, parsed and validated.

The envelope itself, and the half a client needs, are in `_envelope` (plain JSON, no pydantic,
so that agentctl starts fast).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from agentd.bus import BoundedJSONError, loads_bounded
from agentd.control._envelope import (
    PROTOCOL_VERSION,
    decode_reply,
    encode_error,
    encode_ok,
    encode_request,
)
from agentd.errors import ControlError

__all__ = [
    "PROTOCOL_VERSION",
    "READ_ONLY_VERBS",
    "ControlRequest",
    "decode_reply",
    "decode_request",
    "encode_error",
    "encode_ok",
    "encode_request",
]

MAX_REQUEST_BYTES = 1 << 20
# Verbs that only look: a replay of a signed request for one of these (within the signature's
# time window) changes nothing, so the daemon does not spend its nonce cache on them. Every other
# verb, including any added later, is state-changing: its nonce is accepted once.
READ_ONLY_VERBS: frozenset[str] = frozenset(
    {
        "agents", "approvals", "audit.export", "audit.prove", "audit.verify", "config",
        "dlq.list", "logs", "models", "nodes", "policy.explain", "policy.test", "ps", "runs",
        "status", "tokens", "trace",
    }
)  # fmt: skip


class ControlRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = PROTOCOL_VERSION
    args: dict[str, JsonValue] = Field(default_factory=dict)
    operator: str = Field("operator", min_length=1, max_length=200)


def decode_request(data: bytes) -> ControlRequest:
    """Parse a request; raise ControlError(bad_request) saying what is wrong."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ControlError("bad_request", f"request is {len(data)} bytes; the limit is 1 MiB")
    if not data.strip():
        return ControlRequest()
    try:
        raw = loads_bounded(data, what="request", max_bytes=MAX_REQUEST_BYTES)
    except BoundedJSONError as exc:
        raise ControlError("bad_request", str(exc)) from None
    if not isinstance(raw, dict):
        raise ControlError("bad_request", "request must be a JSON object")
    try:
        request = ControlRequest.model_validate(raw)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(request)'}: {e['msg']}" for e in exc.errors()
        )
        raise ControlError("bad_request", f"malformed request: {fields}") from None
    if request.v != PROTOCOL_VERSION:
        raise ControlError(
            "unsupported_version",
            f"protocol version {request.v} is not supported; this daemon speaks {PROTOCOL_VERSION}",
        )
    return request
