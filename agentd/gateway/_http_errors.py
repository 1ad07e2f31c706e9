"""Every error the gateway itself answers is an OpenAI-shaped JSON error.

OpenAI clients read `{"error": {"message", "type", "param", "code"}}` and map the HTTP status
to their exception classes (the openai SDK: 400 BadRequestError, 401 AuthenticationError, 403
PermissionDeniedError, 404 NotFoundError, 413/405 APIStatusError, 429 RateLimitError, 5xx
InternalServerError). The calls' own refusals are made in `_gateway`; this middleware covers
what aiohttp answers before a handler runs (an unknown path, a wrong method, a body too large)
and a handler that fails, which would otherwise be text/plain.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from agentd.gateway._protocol import error_body

__all__ = ["ROUTES", "json_error", "openai_errors"]

log = logging.getLogger("agentd.gateway")

ROUTES = "POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /v1/models/{model}"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(
    status: int,
    kind: str,
    message: str,
    *,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        body=error_body(message, kind, code=code, param=param),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(request, exc)
    except Exception as exc:  # a bug in a handler: 500 JSON, and the traceback in the log
        log.exception("the LLM gateway failed on %s %s", request.method, request.path)
        return json_error(500, "server_error", f"the LLM gateway failed: {exc!r}", code="internal")


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    where = f"{request.method} {request.path}"
    if exc.status == 404:
        return json_error(
            404,
            "invalid_request_error",
            f"unknown URL {where}: the gateway serves {ROUTES}",
            code="unknown_url",
        )
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return json_error(
            405,
            "invalid_request_error",
            f"{where} is not allowed; allowed: {allowed or 'none'} (the gateway serves {ROUTES})",
            code="method_not_allowed",
            headers={"Allow": allowed} if allowed else None,
        )
    if exc.status == 413:
        return json_error(
            413,
            "invalid_request_error",
            f"the body of {where} is too large ([gateway].max_request_bytes)",
            code="request_too_large",
        )
    kind = "server_error" if exc.status >= 500 else "invalid_request_error"
    return json_error(exc.status, kind, f"{where}: {exc.reason}", code=None)
