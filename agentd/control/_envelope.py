"""The control-plane envelope: versioned JSON requests and replies on `agentd.ctl.<verb>`.

Request:  {"v": 1, "args": {...}, "operator": "alice"}      (args and operator optional)
Reply:    {"v": 1, "ok": true, "result": ...}
          {"v": 1, "ok": false, "error": {"code": "...", "message": "...", ...details}}

Plain JSON and the standard library only: agentctl imports this on every call, and the daemon's
validation of a request (pydantic) is in `_protocol`.
"""

from __future__ import annotations

import json
from typing import Any

from agentd.errors import ControlError

__all__ = ["PROTOCOL_VERSION", "decode_reply", "encode_error", "encode_ok", "encode_request"]

PROTOCOL_VERSION = 1


def encode_request(args: dict[str, Any] | None = None, *, operator: str = "operator") -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, "args": args or {}, "operator": operator}).encode()


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
