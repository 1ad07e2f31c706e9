"""The control-plane envelope: versioned JSON requests and replies on `agentd.ctl.<verb>`.

Request:  {"v": 1, "args": {...}, "operator": "alice"}      (args and operator optional)
Reply:    {"v": 1, "ok": true, "result": ...}
          {"v": 1, "ok": false, "error": {"code": "...", "message": "...", ...details}}
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from agentd.bus import BoundedJSONError, loads_bounded
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

PROTOCOL_VERSION = 1
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


def encode_request(args: dict[str, Any] | None = None, *, operator: str = "operator") -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, "args": args or {}, "operator": operator}).encode()


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


def encode_ok(result: Any) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, "ok": True, "result": result}, default=str).encode()


def encode_error(error: ControlError) -> bytes:
    body = {"code": error.code, "message": str(error), **error.details}
    return json.dumps({"v": PROTOCOL_VERSION, "ok": False, "error": body}, default=str).encode()


def decode_reply(data: bytes) -> Any:
    """The result of a reply, or raise the ControlError it carries."""
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ControlError(
            "bad_reply", f"the daemon sent a reply that is not JSON: {exc}"
        ) from None
    if not isinstance(raw, dict) or "ok" not in raw:
        raise ControlError("bad_reply", "the daemon sent a reply without an 'ok' field")
    if raw["ok"]:
        return raw.get("result")
    err = raw.get("error") or {}
    details = {k: v for k, v in err.items() if k not in {"code", "message"}}
    raise ControlError(str(err.get("code", "error")), str(err.get("message", "")), **details)
