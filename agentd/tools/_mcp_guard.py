"""The door of agentd's MCP endpoint: who is calling, and how much they may send.

Every HTTP request passes here before the MCP SDK sees a byte of it:

1. `Authorization: Bearer <token>` names a holder in the token book (a replica's
   AGENTD_LLM_TOKEN, a registered agent's `llm_token`); no token, another scheme, or a token
   not (or no longer) issued is answered 401 and recorded (`mcp.request_refused`,
   decision `unauthenticated`). Revoking an agent revokes its tokens, so its next request is
   refused, whatever session it opened before.
2. The caller is put in the ASGI scope for the MCP handlers, and as `scope["user"]` for the
   SDK, which binds each session to the holder that opened it (another token gets 404).
3. A POST body is read up to `max_request_bytes` (413 beyond it, without reading further)
   and its nesting checked with the bus's bound (`agentd.bus.json_depth`, 400 beyond
   MAX_JSON_DEPTH), then handed on. Both refusals are recorded with the caller.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentd.bus import MAX_JSON_DEPTH, json_depth

__all__ = ["CALLER_KEY", "McpCaller", "McpGuard"]

CALLER_KEY = "agentd.mcp_caller"
"""Where the guard leaves the `McpCaller` in the ASGI scope."""


@dataclass(frozen=True)
class McpCaller:
    """Whom a token speaks for: the agent (the policy subject) and the holder of the token
    (a replica's name, or `<agent>@identity` for a registered agent)."""

    agent: str
    holder: str


Authenticate = Callable[[str], McpCaller | None]


class _Refused(Exception):
    def __init__(self, status: int, decision: str, message: str) -> None:
        super().__init__(message)
        self.status, self.decision = status, decision


class McpGuard:
    """ASGI middleware in front of the SDK's session manager (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Authenticate,
        record: Callable[..., None],
        max_request_bytes: int,
        path: str = "/mcp",
    ) -> None:
        self._app = app
        self._authenticate = authenticate
        self._record = record
        self._max_bytes = max_request_bytes
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no websockets, no lifespan: the daemon runs the server
            return
        if scope["path"].rstrip("/") != self._path:
            await _answer(send, 404, f"not found: the MCP endpoint is {self._path}")
            return
        caller: McpCaller | None = None
        try:
            caller = self._caller(scope)
            if scope["method"] == "POST":
                body = await self._body(scope, receive)
                receive = _replay(body, receive)
        except _Refused as refused:
            self._refused(scope, caller, refused)
            headers = {"WWW-Authenticate": 'Bearer realm="agentd"'} if refused.status == 401 else {}
            await _answer(send, refused.status, str(refused), headers)
            return
        scope[CALLER_KEY] = caller
        # the SDK binds a session to the principal that opened it: agent + token holder
        token = AccessToken(
            token=_fingerprint(_bearer(scope) or ""),
            client_id=caller.agent,
            scopes=[],
            subject=caller.holder,
        )
        scope["user"] = AuthenticatedUser(token)
        await self._app(scope, receive, send)

    def _caller(self, scope: Scope) -> McpCaller:
        token = _bearer(scope)
        if token is None:
            raise _Refused(
                401,
                "unauthenticated",
                "no bearer token: send 'Authorization: Bearer <token>' with the agent's token "
                "(AGENTD_LLM_TOKEN in a replica, llm_token of a registered agent)",
            )
        caller = self._authenticate(token)
        if caller is None:
            raise _Refused(401, "unauthenticated", "unknown or revoked bearer token")
        return caller

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        too_large = _Refused(
            413,
            "request_too_large",
            f"the request body is over {self._max_bytes} bytes "
            "([tools.mcp_endpoint].max_request_bytes)",
        )
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
            raise too_large  # said so up front: not a byte of it is read
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(400, "bad_request", "the client went away before its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_bytes:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if json_depth(body, stop_after=MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            raise _Refused(
                400,
                "bad_request",
                f"the request nests arrays/objects deeper than {MAX_JSON_DEPTH} levels",
            )
        return body

    def _refused(self, scope: Scope, caller: McpCaller | None, refused: _Refused) -> None:
        client = scope.get("client")
        self._record(
            "mcp.request_refused",
            agent=caller.agent if caller else None,
            replica=caller.holder if caller else None,
            decision=refused.decision,
            rule="bearer token" if refused.status == 401 else "[tools.mcp_endpoint] bounds",
            reason=str(refused),
            status=refused.status,
            method=scope.get("method"),
            client=f"{client[0]}:{client[1]}" if client else None,
        )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _bearer(scope: Scope) -> str | None:
    header = _header(scope, b"authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _fingerprint(token: str) -> str:
    """What the SDK keeps of a token: a digest (the token itself stays out of its state)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body read already, then whatever the client sends next (its
    disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def _answer(
    send: Send, status: int, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    raw: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body})
