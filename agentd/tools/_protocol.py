"""The wire format of a tool call: the request on `agentd.tool.<agent>.<tool>` and its reply.

Request: `{"args": {...}, "message_id", "call_id", "run_id", "conversation_id"}`; the agent is
the subject's, never a field. A tool defined in the graph (a LangChain tool the replica runs
itself, agentd/tools/README.md "Tools defined in the graph") adds `local`: `{"phase": "begin",
"described", "description", "schema", "invalid"}` asks for the decision (reply: `{"ok": true,
"grant": id}`, run it, or a stored result with `"replayed": true`), then `{"phase": "end",
"grant", "ok", "result" | "error"}` reports what the body did.
Reply: `{"ok": true, "result": ..., "replayed": bool}` or `{"ok": false, "error": {"code",
"message", "rule", "retry_after_s", "approval_id", "retryable"}}`,
every error key present (null when it does not apply).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from agentd.bus import MAX_JSON_DEPTH, json_depth
from agentd.errors import AgentdError

__all__ = [
    "ErrorCode",
    "LocalBegin",
    "LocalEnd",
    "ToolCallRequest",
    "ToolRefusal",
    "ok_reply",
    "parse_request",
]

ErrorCode = Literal[
    "bad_request",
    "unknown_tool",
    "invalid_args",
    "policy_denied",
    "rate_limited",
    "approval_denied",
    "approval_timeout",
    "idempotency_conflict",
    "tool_failed",
    "unavailable",
    "internal",
]

MAX_REQUEST_BYTES = 1 << 20


class LocalBegin(BaseModel):
    """A tool the replica runs itself asks for the decision. `description` and `schema` are
    what the model was shown (recorded, never trusted); `invalid` says the arguments did not fit
    the tool's own schema in the replica (the call is then denied as `invalid_args`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phase: Literal["begin"]
    described: str | None = Field(None, max_length=64)
    """A digest of the description and schema: sent with every call, the two themselves only
    until the gateway has recorded them once from this replica."""
    description: str | None = Field(None, max_length=4096)
    schema_: dict[str, JsonValue] | None = Field(None, alias="schema")
    invalid: str | None = Field(None, max_length=4096)


class LocalEnd(BaseModel):
    """The replica reports what the body of a granted call did: `ok` with its `result` (stored
    under the call's key), or the `error` it ended with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    phase: Literal["end"]
    grant: str = Field(min_length=1, max_length=100)
    ok: bool
    result: JsonValue = None
    error: str | None = Field(None, max_length=4096)


class ToolCallRequest(BaseModel):
    """What a caller sends. `message_id` + `call_id` make the idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    args: dict[str, JsonValue] = {}
    message_id: str = Field(min_length=1, max_length=200)
    call_id: str = Field(min_length=1, max_length=200)
    run_id: str | None = Field(None, max_length=200)
    conversation_id: str | None = Field(None, max_length=200)
    local: Annotated[LocalBegin | LocalEnd, Field(discriminator="phase")] | None = None
    """Set for a tool defined in the graph (run by the replica): which phase of the call."""


class ToolRefusal(AgentdError):
    """A call that ends without running the tool (or with the tool failing): its error reply."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        rule: str | None = None,
        retry_after_s: float | None = None,
        approval_id: str | None = None,
        retryable: bool = False,
    ) -> None:
        self.code = code
        self.rule = rule
        # an infinite wait (a cost above the burst) is no wait at all: JSON cannot carry inf
        finite = retry_after_s is not None and math.isfinite(retry_after_s)
        self.retry_after_s = retry_after_s if finite else None
        self.approval_id = approval_id
        self.retryable = retryable
        super().__init__(message)

    def to_error(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": str(self),
            "rule": self.rule,
            "retry_after_s": self.retry_after_s,
            "approval_id": self.approval_id,
            "retryable": self.retryable,
        }

    def reply(self) -> bytes:
        return json.dumps({"ok": False, "error": self.to_error()}).encode()


def ok_reply(result: JsonValue, *, replayed: bool) -> bytes:
    return json.dumps({"ok": True, "result": result, "replayed": replayed}).encode()


def parse_request(data: bytes) -> ToolCallRequest:
    """The request, or `ToolRefusal("bad_request")` naming what is wrong."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ToolRefusal("bad_request", f"request is {len(data)} bytes; the limit is 1 MiB")
    if json_depth(data, stop_after=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ToolRefusal(
            "bad_request",
            f"request nests arrays/objects deeper than the limit of {MAX_JSON_DEPTH} levels",
            rule="request",
        )
    try:
        return ToolCallRequest.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(request)'}: {e['msg']}" for e in exc.errors()
        )
        raise ToolRefusal(
            "bad_request", f"malformed tool call: {problems}", rule="request"
        ) from None


def trace_id_of(headers: dict[str, str] | None) -> str | None:
    """The trace id of a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`), if any."""
    value = (headers or {}).get("traceparent", "")
    parts = value.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        try:
            int(parts[1], 16)
        except ValueError:
            return None
        return parts[1]
    return None
