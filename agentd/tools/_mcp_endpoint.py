"""agentd as an MCP server: the governed tools, for MCP clients outside the daemon.

Streamable HTTP on loopback (`[tools.mcp_endpoint]`), the official `mcp` SDK's session
manager behind `McpGuard` (bearer token -> agent, bounded bodies). What a client gets is what
that agent's graph gets:

- `tools/list`: the tools the agent may ask for (its spec's `tools`; a registered agent's
  registration spec's), with their descriptions and JSON schemas from the registry;
- `tools/call`: a request on `agentd.tool.<agent>.<tool>`, the very subject a replica of that
  agent calls, so the tool gateway's `CallPipeline` decides it (spec, schema, policy,
  constraints, taint, rate limits, approvals that park, idempotency), records it and traces it
  (`execute_tool`, a child of the client's `traceparent` when it sends one). A refusal comes
  back as a tool result with `isError` (code, message, rule), never as a transport error.

Idempotency: an MCP request id is unique per session only, so it cannot name a call across a
reconnect. A client that retries sends the same `_meta.idempotency_key`; without one each call
gets a fresh key (it runs once, and a retry runs again). See README.md here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import uuid
from collections.abc import Callable, Generator
from typing import Any

import anyio
import mcp.types as types
import nats.errors
import uvicorn
from anyio.abc import TaskStatus
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from nats.aio.client import Client
from starlette.requests import Request

from agentd.bus import BoundedJSONError, Subjects, loads_bounded
from agentd.config import TOOL_NAME, McpEndpointConfig, ToolsConfig, split_listen
from agentd.errors import ConfigError
from agentd.tools._mcp_guard import CALLER_KEY, Authenticate, McpCaller, McpGuard
from agentd.tools._registry import ToolRegistry

__all__ = ["IDEMPOTENCY_META", "McpEndpoint"]

log = logging.getLogger("agentd.tools.mcp")

IDEMPOTENCY_META = "idempotency_key"
"""The `_meta` key of a tools/call that names the call across retries and reconnects."""
_KEY = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._:-]{0,127}$")
MAX_REPLY_BYTES = 64 << 20
SHUTDOWN_GRACE_S = 1
PATH = "/mcp"


class McpEndpoint:
    """Serves `[tools.mcp_endpoint]` until `shutdown()`; `url` names it once listening."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        *,
        config: McpEndpointConfig,
        tools: ToolsConfig,
        registry: ToolRegistry,
        allowed_tools: Callable[[str], list[str] | None],
        authenticate: Authenticate,
        record: Callable[..., None],
    ) -> None:
        self._nc = nc
        self._subjects = subjects
        self.config = config
        self._registry = registry
        self._allowed_tools = allowed_tools
        self._authenticate = authenticate
        self._record = record
        self.wait_s = config.call_timeout_s or _default_wait(tools, registry)
        self.url: str | None = None
        self._stopped = anyio.Event()
        self._mcp: Server[Any, Request] = Server("agentd", instructions=_INSTRUCTIONS)
        self._mcp.request_handlers[types.ListToolsRequest] = self._list_tools
        self._mcp.request_handlers[types.CallToolRequest] = self._call_tool

    # service lifecycle
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        host, sock = self._bind()
        port = sock.getsockname()[1]
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.url = f"http://{netloc}{PATH}"
        names = {host, "127.0.0.1", "localhost", "[::1]"}
        manager = StreamableHTTPSessionManager(
            self._mcp,
            json_response=True,
            # a page another site serves cannot reach loopback through a rebound DNS name
            security_settings=TransportSecuritySettings(
                allowed_hosts=[f"{n}:{port}" for n in names],
                allowed_origins=[f"http://{n}:{port}" for n in names],
            ),
            session_idle_timeout=self.config.session_idle_s,
            max_request_body_size=self.config.max_request_bytes,
            max_sessions=self.config.max_sessions,
        )
        app = McpGuard(
            manager.handle_request,
            authenticate=self._authenticate,
            record=self._record,
            max_request_bytes=self.config.max_request_bytes,
            path=PATH,
        )
        server = _EmbeddedServer(
            uvicorn.Config(
                app,
                lifespan="off",
                interface="asgi3",
                http="h11",
                ws="none",
                log_config=None,
                access_log=False,
                server_header=False,
                # a client's GET stream never ends by itself, and the daemon's whole drain
                # shares one deadline: requests in flight get a moment, then are cut (a call
                # cut off still completes in the tool gateway; a retry with its key gets it)
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                h11_max_incomplete_event_size=64 * 1024,  # request line and headers
                # connections and requests at once: each session's GET stream and a call or
                # two in flight; beyond it uvicorn answers 503 instead of taking more
                limit_concurrency=2 * self.config.max_sessions + 64,
            )
        )
        _quiet_sdk_logs()
        with sock:
            async with manager.run(), anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [sock])
                log.info("MCP endpoint listening on %s", self.url)
                task_status.started()  # the socket listens: connections wait in its backlog
                await self._stopped.wait()
                server.should_exit = True

    async def shutdown(self) -> None:
        """Stop taking requests; those in flight get the drain grace. Repeatable."""
        self._stopped.set()

    def _bind(self) -> tuple[str, socket.socket]:
        host, port = split_listen(self.config.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.create_server((host, port), family=family, backlog=128)
        except OSError as exc:
            raise ConfigError(
                "[tools.mcp_endpoint]",
                [
                    f"listen: cannot listen on {self.config.listen}: {exc}; is the port in "
                    "use? set [tools.mcp_endpoint].listen (port 0 picks a free one)"
                ],
            ) from exc
        # accepted connections inherit it: without it a small response waits for the
        # client's delayed ACK (~40 ms a call on Linux loopback; uvicorn leaves it to us when
        # it is handed a socket)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return host, sock

    # MCP requests
    def _caller(self) -> tuple[McpCaller, Request]:
        request = self._mcp.request_context.request
        caller = request.scope.get(CALLER_KEY) if request is not None else None
        if request is None or not isinstance(caller, McpCaller):  # the guard always sets it
            raise RuntimeError("an MCP request reached agentd without passing its guard")
        return caller, request

    async def _list_tools(self, _: types.ListToolsRequest) -> types.ServerResult:
        caller, _request = self._caller()
        tools = []
        for name in self._allowed_tools(caller.agent) or []:
            spec = self._registry.get(name)
            if spec is None:  # named in the spec, not in tools/: its calls get unknown_tool
                continue
            tools.append(
                types.Tool(name=name, description=spec.description, inputSchema=spec.schema)
            )
        return types.ServerResult(types.ListToolsResult(tools=tools))

    async def _call_tool(self, req: types.CallToolRequest) -> types.ServerResult:
        caller, request = self._caller()
        tool = req.params.name
        extra = req.params.meta.model_extra if req.params.meta is not None else None
        key = (extra or {}).get(IDEMPOTENCY_META)
        refusal = _bad_call(tool, key)
        if refusal is not None:
            self._record(
                "tool.denied",
                agent=caller.agent,
                replica=caller.holder,
                tool=tool[:200],
                decision="bad_request",
                rule="mcp request",
                reason=refusal,
            )
            return _error_result({"code": "bad_request", "message": refusal, "rule": "mcp request"})
        session = request.headers.get("mcp-session-id")
        body = {
            "args": req.params.arguments or {},
            # one key space per agent (the gateway keys results by agent, message and call)
            "message_id": f"mcp:{key or uuid.uuid4().hex}",
            "call_id": "mcp",
            "conversation_id": f"mcp-{session}" if session else None,
        }
        headers = {
            h: request.headers[h] for h in ("traceparent", "tracestate") if h in request.headers
        }
        subject = self._subjects.tool(caller.agent, tool)
        try:
            reply = await self._nc.request(
                subject, json.dumps(body).encode(), timeout=self.wait_s, headers=headers or None
            )
            answer = loads_bounded(
                reply.data, what=f"the tool gateway's reply on {subject}", max_bytes=MAX_REPLY_BYTES
            )
        except nats.errors.NoRespondersError:
            return _error_result(
                {"code": "unavailable", "message": "no tool gateway is running", "retryable": True}
            )
        except (TimeoutError, nats.errors.TimeoutError):
            again = f"send the same _meta.{IDEMPOTENCY_META} to get its result" if key else ""
            message = f"no answer from the tool gateway within {self.wait_s:g}s; the call may "
            message += f"still complete{': ' + again if again else ''}"
            return _error_result({"code": "timeout", "message": message, "retryable": True})
        except (nats.errors.Error, BoundedJSONError) as exc:
            log.warning("MCP call %s by %s: %s", tool, caller.agent, exc)
            return _error_result(
                {"code": "unavailable", "message": f"the tool gateway: {exc}", "retryable": True}
            )
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("error") if isinstance(answer, dict) else None
            return _error_result(error if isinstance(error, dict) else {"code": "internal"})
        return _ok_result(answer.get("result"), replayed=bool(answer.get("replayed")))


_INSTRUCTIONS = (
    "agentd's governed tools. Every call is decided by policy for the agent your token belongs "
    "to, rate-limited, may wait for a person's approval, and is recorded. A refused call is a "
    "result with isError (code, message, rule). Send _meta.idempotency_key to make a retried "
    "call run once."
)


class _QuietSdk(logging.Filter):
    """The SDK logs every request at INFO ("Processing request of type ...") and a client
    ending its session as an ERROR with a traceback (its GET stream closing:
    ClosedResourceError). Both are the normal course of a session: kept for DEBUG only."""

    def filter(self, record: logging.LogRecord) -> bool:
        closed = record.exc_info is not None and record.exc_info[0] is anyio.ClosedResourceError
        routine = closed or record.getMessage().startswith("Processing request of type")
        if not routine:
            return True
        record.levelno, record.levelname, record.exc_info, record.exc_text = (
            logging.DEBUG,
            "DEBUG",
            None,
            None,
        )
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _quiet_sdk_logs() -> None:
    for name in ("mcp.server.streamable_http", "mcp.server.lowlevel.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietSdk) for f in logger.filters):
            logger.addFilter(_QuietSdk())


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the daemon: the daemon owns the signals (uvicorn would install its own
    SIGINT/SIGTERM handlers and swallow the daemon's shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _default_wait(tools: ToolsConfig, registry: ToolRegistry) -> float:
    """Long enough for a call parked for approval that then runs its longest timeout."""
    timeouts = [tools.call_timeout_s]
    timeouts += [o.timeout_s for o in tools.overrides.values() if o.timeout_s]
    for name in registry.names:
        spec = registry.get(name)
        if spec is not None and spec.timeout_s:
            timeouts.append(spec.timeout_s)
    return tools.approval_timeout_s + max(timeouts) + 30.0


def _bad_call(tool: str, key: object) -> str | None:
    """Why a tools/call cannot even be asked of the gateway, or None."""
    if not TOOL_NAME.match(tool):
        return f"{tool[:200]!r} is not a tool name (letters, digits, _ and -, dot-separated)"
    if key is not None and not (isinstance(key, str) and _KEY.match(key)):
        return (
            f"_meta.{IDEMPOTENCY_META} must be 1-128 characters of letters, digits, '.', '_', "
            "':' and '-', starting with a letter or digit"
        )
    return None


def _ok_result(result: Any, *, replayed: bool) -> types.ServerResult:
    text = result if isinstance(result, str) else json.dumps(result)
    return types.ServerResult(
        types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structuredContent=result if isinstance(result, dict) else None,
            isError=False,
            _meta={"agentd/replayed": replayed},
        )
    )


def _error_result(error: dict[str, Any]) -> types.ServerResult:
    """A refused or failed call as the tool result MCP clients expect (isError), saying the
    gateway's code, message and rule; the whole error is the structured content."""
    code = error.get("code") or "error"
    text = f"{code}: {error.get('message') or 'the call failed'}"
    if error.get("rule"):
        text += f" (rule: {error['rule']})"
    if error.get("approval_id"):
        text += f" (approval {error['approval_id']})"
    if error.get("retry_after_s") is not None:
        text += f" (retry after {error['retry_after_s']:g}s)"
    return types.ServerResult(
        types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structuredContent={"error": error},
            isError=True,
        )
    )
