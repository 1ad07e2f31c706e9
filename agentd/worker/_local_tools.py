"""Every LangChain tool a graph runs goes through the tool gateway first: governed by construction.

`install(context)` replaces `langchain_core.tools.BaseTool.run` and `.arun` (the one path that
`tool.invoke` / `ainvoke`, `ToolNode`, `create_react_agent` and `create_agent` all take, for
`@tool` functions, `StructuredTool`s and `BaseTool` subclasses alike) before the graph module is
imported. An intercepted call:

1. asks the gateway (`agentd.tool.<agent>.<tool>`, `local.phase = "begin"`) for the decision:
   policy `tool:<name>` `call` on the validated arguments, constraints, taint, rate limit,
   approval (which parks the call here until an operator answers) and the stored result of the
   call's idempotency key = the run's message id + the model's tool call id (`c1`, `c2`, ... in
   the run's call order when the call has none, as `ctx.call_tool` numbers them);
2. runs the body through LangChain's own `run` / `arun` (callbacks, validation, error handling
   exactly as without agentd), or returns the stored result without running it;
3. reports the outcome (`phase = "end"`), which the gateway stores under the key and records.

A refusal reaches the model as a `ToolMessage(status="error")` naming code, rule and reason, so
the run goes on; a call without a tool call id (`tool.invoke({...})` in a hand-written loop)
raises `ToolCallRefused`, a `ToolException`. A call outside a run fails closed. Tools marked
`metadata={"agentd_gateway": True}` are proxies of gateway tools that call `ctx.call_tool`
themselves: they pass through. Why this mechanism: agentd/tools/README.md, "Tools defined in
the graph".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import nats.errors
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException

from agentd.errors import AgentdError
from agentd.telemetry import execute_tool_span, inject_nats_headers
from agentd.worker._context import _TOOL_NAME, AgentContext, RunInfo, _current
from agentd.worker._tool_io import outcome, policy_args, refusal_text

__all__ = [
    "GATEWAY_MARK",
    "ToolCallOutsideRun",
    "ToolCallRefused",
    "install",
    "settle",
    "uninstall",
]

log = logging.getLogger("agentd.worker.tools")

GATEWAY_MARK = "agentd_gateway"
"""`metadata` key of a LangChain tool that proxies a gateway tool (it calls `ctx.call_tool`)."""
END_TIMEOUT_S = 30.0
_SCHEMAS_KEPT = 256
_FILTERED = ("run_manager", "callbacks")  # LangChain's own, never the model's
_NOT_ANSWERED = ("unavailable", "timeout", "bad_request")  # the gateway recorded nothing

_original_run: Callable[..., Any] | None = None
_original_arun: Callable[..., Any] | None = None
_governor: _Governor | None = None


class ToolCallOutsideRun(AgentdError):
    """A LangChain tool was called where no run is (at import, in a factory, in a task that
    left its run's context): nothing can decide it, so it does not run."""


class ToolCallRefused(ToolException):
    """The gateway refused a call that has no tool call id to answer with a ToolMessage."""

    def __init__(self, tool: str, error: dict[str, Any]) -> None:
        self.tool = tool
        self.error = error
        self.code = str(error.get("code") or "error")
        self.rule: str | None = error.get("rule")
        super().__init__(refusal_text(tool, error))


def install(context: AgentContext) -> None:
    """Govern every LangChain tool call in this process from now on (idempotent); the calls go
    out as `context`'s agent. Call it from the replica's event loop."""
    global _original_run, _original_arun, _governor
    _governor = _Governor(context, asyncio.get_running_loop())
    if _original_run is None:
        _original_run, _original_arun = BaseTool.run, BaseTool.arun
        BaseTool.run = _governed_run  # type: ignore[method-assign]
        BaseTool.arun = _governed_arun  # type: ignore[method-assign]


def uninstall() -> None:
    """Give LangChain its own `run` / `arun` back (tests that share a process with others)."""
    global _original_run, _original_arun, _governor
    if _original_run is not None and _original_arun is not None:
        BaseTool.run = _original_run  # type: ignore[method-assign]
        BaseTool.arun = _original_arun  # type: ignore[method-assign]
    _original_run = _original_arun = None
    _governor = None


async def settle() -> None:
    """Wait until every tool outcome reported so far is answered (stored or refused): the
    worker calls it before it records a run as finished and acks its message."""
    governor = _governor
    if governor is not None and governor.ends:
        await asyncio.gather(*list(governor.ends), return_exceptions=True)


def _passes(tool: BaseTool) -> bool:
    return bool((tool.metadata or {}).get(GATEWAY_MARK))


async def _governed_arun(self: BaseTool, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
    assert _original_arun is not None
    if _passes(self):
        return await _original_arun(self, tool_input, *args, **kwargs)
    call = _LocalCall.start(self, tool_input, kwargs.get("tool_call_id"))
    with call.span():
        answer = await call.begin()
        if not answer.get("ok"):
            return call.refused(answer.get("error") or {})
        grant = answer.get("grant")
        if not isinstance(grant, str):
            return call.replayed(answer.get("result"))
        try:
            output = await _original_arun(self, tool_input, *args, **kwargs)
        except BaseException as exc:
            # cancelled or failed: the report still goes, so the claim is released now
            call.report(grant, None, exc)
            raise
        # the model gets the result while the report travels; the run is not finished (nor its
        # message acked) before every report of it is answered (`settle`)
        call.report(grant, output, None)
        return output


def _governed_run(self: BaseTool, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
    assert _original_run is not None
    if _passes(self):
        return _original_run(self, tool_input, *args, **kwargs)
    call = _LocalCall.start(self, tool_input, kwargs.get("tool_call_id"))
    with call.span():
        answer = call.governor.blocking(call.begin())
        if not answer.get("ok"):
            return call.refused(answer.get("error") or {})
        grant = answer.get("grant")
        if not isinstance(grant, str):
            return call.replayed(answer.get("result"))
        try:
            output = _original_run(self, tool_input, *args, **kwargs)
        except BaseException as exc:
            call.governor.blocking(call.end(grant, None, exc))
            raise
        call.governor.blocking(call.end(grant, output, None))
        return output


class _Governor:
    """The replica's way to the gateway, and what it knows of the tools it has seen."""

    def __init__(self, context: AgentContext, loop: asyncio.AbstractEventLoop) -> None:
        self.context = context
        self.loop = loop
        self._schemas: dict[int, tuple[BaseTool, dict[str, Any], frozenset[str]]] = {}
        self._recorded: set[str] = set()  # digests of descriptions the gateway has recorded
        self.ends: set[asyncio.Future[None]] = set()
        """Reports on their way to the gateway."""

    def blocking(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run `coro` on the replica's loop from a tool's thread (a sync `tool.invoke`)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            coro.close()
            raise ToolCallOutsideRun(
                "a synchronous tool call (tool.invoke / tool.run) on the replica's event loop "
                "would block it while the gateway decides: use `await tool.ainvoke(...)`"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def described(self, tool: BaseTool) -> dict[str, Any]:
        """What the model is shown of `tool`: its digest, and the description and schema until
        the gateway has recorded them once from this replica (computed once per tool object)."""
        shown = self._known(tool)[0]
        digest = shown["described"]
        return {"described": digest} if digest in self._recorded else shown

    def recorded(self, tool: BaseTool) -> None:
        """The gateway answered a call of `tool`: its description is in the decision log."""
        self._recorded.add(self._known(tool)[0]["described"])

    def injected(self, tool: BaseTool) -> frozenset[str]:
        """The arguments LangGraph fills in (state, store, the call id), not the model."""
        return self._known(tool)[1]

    def _known(self, tool: BaseTool) -> tuple[dict[str, Any], frozenset[str]]:
        kept = self._schemas.get(id(tool))
        if kept is not None and kept[0] is tool:
            return kept[1], kept[2]
        try:
            schema: Any = tool.tool_call_schema.model_json_schema()  # type: ignore[union-attr]
        except Exception:
            schema = tool.args_schema if isinstance(tool.args_schema, dict) else None
        shown = {"description": (tool.description or "")[:4096], "schema": schema}
        text = json.dumps(shown, sort_keys=True, default=str).encode()
        shown["described"] = hashlib.sha256(text).hexdigest()[:16]
        fields = set(getattr(tool.args_schema, "model_fields", None) or {})
        filtered = fields - set(tool._filter_injected_args(dict.fromkeys(fields)))
        injected = frozenset(filtered | set(tool._injected_args_keys) | set(_FILTERED))
        if len(self._schemas) >= _SCHEMAS_KEPT:
            self._schemas.clear()
        self._schemas[id(tool)] = (tool, shown, injected)
        return shown, injected

    async def request(
        self, tool: str, body: dict[str, Any], headers: dict[str, str], timeout_s: float
    ) -> dict[str, Any]:
        nc, subjects = self.context._nc, self.context._subjects
        data = json.dumps(body, default=str).encode()
        try:
            reply = await nc.request(
                subjects.tool(self.context.agent, tool), data, timeout=timeout_s, headers=headers
            )
        except nats.errors.NoRespondersError:
            error = {"code": "unavailable", "message": "no tool gateway is running"}
            return {"ok": False, "error": {**error, "retryable": True}}
        except (TimeoutError, nats.errors.TimeoutError):
            error = {"code": "timeout", "message": f"no answer within {timeout_s:g}s"}
            return {"ok": False, "error": {**error, "retryable": True}}
        except nats.errors.Error as exc:  # the connection is closing or reconnecting
            error = {"code": "unavailable", "message": f"the bus failed: {exc!r}"}
            return {"ok": False, "error": {**error, "retryable": True}}
        answer: dict[str, Any] = json.loads(reply.data)
        return answer


class _LocalCall:
    """One intercepted call: its identity, arguments and the steps around its body."""

    def __init__(
        self, governor: _Governor, tool: BaseTool, run: RunInfo, call_id: str, model_id: str | None
    ) -> None:
        self.governor = governor
        self.tool = tool
        self.run = run
        self.call_id = call_id
        self.model_id = model_id  # the model's tool call id: a refusal answers it
        self.args: dict[str, Any] = {}
        self.invalid: str | None = None
        self.headers: dict[str, str] = {}

    @classmethod
    def start(cls, tool: BaseTool, tool_input: Any, tool_call_id: str | None) -> _LocalCall:
        governor, run = _governor, _current.get()
        if governor is None or run is None:
            raise ToolCallOutsideRun(
                f"tool {tool.name!r} was called outside a run: every tool call is decided by "
                "the tool gateway for the run that makes it, so it did not run"
            )
        if tool_call_id is None:  # numbered as ctx.call_tool numbers its calls
            run.tool_calls += 1
        call = cls(governor, tool, run, tool_call_id or f"c{run.tool_calls}", tool_call_id)
        injected = governor.injected(tool)
        call.args, call.invalid = policy_args(tool, tool_input, tool_call_id, injected)
        return call

    def span(self) -> Any:
        return _SpanThenHeaders(self)

    def _body(self, local: dict[str, Any]) -> dict[str, Any]:
        return {
            "args": self.args,
            "message_id": self.run.message_id,
            "call_id": self.call_id,
            "run_id": self.run.run_id,
            "conversation_id": self.run.conversation_id,
            "local": local,
        }

    async def begin(self) -> dict[str, Any]:
        if not _TOOL_NAME.match(self.tool.name):
            message = f"{self.tool.name!r} is not a tool name agentd can govern (letters, digits"
            error = {"code": "bad_request", "message": message + ", _ and - between dots)"}
            return {"ok": False, "error": error}
        local = {"phase": "begin", **self.governor.described(self.tool), "invalid": self.invalid}
        timeout_s = self.governor.context.tool_timeout_s  # long enough for a human approval
        answer = await self.governor.request(
            self.tool.name, self._body(local), self.headers, timeout_s
        )
        if answer.get("ok") or (answer.get("error") or {}).get("code") not in _NOT_ANSWERED:
            self.governor.recorded(self.tool)
        return answer

    async def end(self, grant: str, output: Any, error: BaseException | None) -> None:
        ok, result, why = outcome(output, error)
        local = {"phase": "end", "grant": grant, "ok": ok, "result": result, "error": why}
        answer = await self.governor.request(
            self.tool.name, self._body(local), self.headers, END_TIMEOUT_S
        )
        if ok and not answer.get("ok"):  # the result stands for this run, but is not stored
            log.warning(
                "the result of %s (%s) was not stored: %s",
                self.tool.name,
                self.call_id,
                answer.get("error"),
            )

    def report(self, grant: str, output: Any, error: BaseException | None) -> None:
        """`end` in a task of its own: it reaches the gateway even when the calling task is
        being cancelled, and `settle` waits for it."""
        task = asyncio.ensure_future(self.end(grant, output, error))
        self.governor.ends.add(task)
        task.add_done_callback(self.governor.ends.discard)

    def refused(self, error: dict[str, Any]) -> Any:
        if self.model_id is None:
            raise ToolCallRefused(self.tool.name, error)
        text = refusal_text(self.tool.name, error)
        return ToolMessage(text, tool_call_id=self.model_id, name=self.tool.name, status="error")

    def replayed(self, result: Any) -> Any:
        if self.model_id is None:
            return result
        content = result if isinstance(result, str | list) else json.dumps(result)
        return ToolMessage(content, tool_call_id=self.model_id, name=self.tool.name)


class _SpanThenHeaders:
    """The call's `execute_tool` span, current while it runs; its context goes to the gateway."""

    def __init__(self, call: _LocalCall) -> None:
        self._call = call
        run = call.run
        self._scope = execute_tool_span(
            call.tool.name,
            agent=call.governor.context.agent,
            call_id=call.call_id,
            conversation_id=run.conversation_id,
            run_id=run.run_id,
            args=call.args,
        )

    def __enter__(self) -> None:
        self._scope.__enter__()
        self._call.headers = inject_nats_headers() or {}

    def __exit__(self, *exc: Any) -> None:
        self._scope.__exit__(*exc)
