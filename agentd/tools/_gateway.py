"""The tool gateway: every tool call of every agent, checked, recorded and run in one place.

A graph requests `agentd.tool.<agent>.<tool>`; the subject's agent is the caller (NATS
permissions let a replica publish only under its own name). Each request runs in its own task
(a call parked for approval blocks no other) through the steps of `CallPipeline`, each recorded
as one decision. Operators list, approve and deny parked calls through `pending()`,
`approve()` and `deny()`.

Prompt injection cannot be trained out of a model; it is stopped here, by rules that never read
a prompt. See README.md in this directory for the decisions behind each step.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from agentd.bus import Subjects, serve_each
from agentd.config import ToolsConfig
from agentd.errors import ControlError
from agentd.policy import DecisionPoint
from agentd.telemetry import execute_tool_span, extract_context
from agentd.tools._approvals import ApprovalBook, ApprovalOutcome, PendingApproval
from agentd.tools._catalog import catalog_reply
from agentd.tools._host import ToolSandbox
from agentd.tools._local import LocalCalls
from agentd.tools._pipeline import CallPipeline
from agentd.tools._protocol import (
    ToolCallRequest,
    ToolRefusal,
    ok_reply,
    parse_request,
    trace_id_of,
)
from agentd.tools._records import ToolCall
from agentd.tools._registry import ToolRegistry
from agentd.tools._results import ResultStore, ensure_results_bucket
from agentd.tools._taint import TaintBook

__all__ = ["ToolGateway"]

log = logging.getLogger("agentd.tools")


class ToolGateway:
    """Serves `agentd.tool.>` (queue group "tools") until `shutdown()`."""

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        subjects: Subjects,
        *,
        point: DecisionPoint | None,
        registry: ToolRegistry,
        allowed_tools: Callable[[str], list[str] | None],
        record: Callable[..., None],
        config: ToolsConfig,
        drain_grace_s: float = 10.0,
        stream_replicas: int = 1,
        taint: TaintBook | None = None,
        sandboxes: Mapping[str, ToolSandbox] | None = None,
        policy_subject: Callable[[str], str] | None = None,
    ) -> None:
        self._nc = nc
        self._stream_replicas = stream_replicas
        self._js = js
        self._subjects = subjects
        self._point = point
        self._config = config
        self._drain_grace_s = drain_grace_s
        self._book = ApprovalBook()
        self._registry = registry
        self._allowed_tools = allowed_tools
        self._calls = CallPipeline(
            point=point,
            registry=registry,
            allowed_tools=allowed_tools,
            record=record,
            config=config,
            book=self._book,
            taint=taint,
            policy_subject=policy_subject,
        )
        self._calls.sandboxes = sandboxes or {}  # isolated tools' (agentd.daemon builds them)
        self.local = LocalCalls(self._calls)  # tools defined in graphs, run by their replicas
        self._stopped = anyio.Event()
        self._active = 0
        self._idle = anyio.Event()
        self._idle.set()

    # service lifecycle
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        bucket, ttl = self._subjects.tool_results_bucket, self._config.results_ttl_s
        self._calls.store = ResultStore(
            await ensure_results_bucket(self._js, bucket, ttl, replicas=self._stream_replicas)
        )
        async with (
            serve_each(self._nc, self._subjects.tool_all, self._handle, queue="tools") as sub,
            serve_each(
                self._nc, self._subjects.tool_catalog_all, self._catalog, queue="tools"
            ) as catalog,
        ):
            task_status.started()
            try:
                await self._stopped.wait()
            finally:
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                        await catalog.unsubscribe()
                    for pending in self._book.pending():  # callers retry after the restart
                        shutdown = "the tool gateway is shutting down"
                        self._book.answer(
                            pending, ApprovalOutcome(False, None, shutdown, "shutdown")
                        )
                    with anyio.move_on_after(self._drain_grace_s):
                        await self._idle.wait()

    async def shutdown(self) -> None:
        """Stop taking calls; parked calls are refused, running ones get the drain grace."""
        self._stopped.set()

    # operators
    def pending(self) -> list[dict[str, Any]]:
        """Calls waiting for approval, oldest first."""
        return [p.to_dict() for p in self._book.pending()]

    def approve(self, approval_id: str, operator: str) -> dict[str, Any]:
        """Approve a parked call; it then runs. Raises `ControlError` ("not_found", or
        "approval_invalid" when the binding no longer holds, e.g. the policy changed: the call
        is then denied)."""
        pending = self._waiting(approval_id)
        version = self._point.version if self._point is not None else pending.policy_version
        why = pending.binding.mismatch(pending.request, policy_version=version)
        if why is not None:
            reason = f"approval by {operator} no longer applies: {why}"
            self._book.answer(pending, ApprovalOutcome(False, operator, reason, "approval binding"))
            raise ControlError(
                "approval_invalid",
                f"approval {approval_id} no longer applies: {why}; the call was denied",
                approval_id=approval_id,
            )
        granted = ApprovalOutcome(True, operator, f"approved by {operator}", pending.rule)
        self._book.answer(pending, granted)
        return {**pending.to_dict(), "status": "approved", "operator": operator}

    def deny(self, approval_id: str, operator: str, reason: str) -> dict[str, Any]:
        """Deny a parked call; the caller gets `approval_denied` with `reason`."""
        pending = self._waiting(approval_id)
        why = reason or "no reason given"
        self._book.answer(pending, ApprovalOutcome(False, operator, why, f"operator:{operator}"))
        return {**pending.to_dict(), "status": "denied", "operator": operator, "reason": why}

    def _waiting(self, approval_id: str) -> PendingApproval:
        pending = self._book.get(approval_id)
        if pending is None:
            raise ControlError(
                "not_found", f"no call waits for approval {approval_id!r}", approval_id=approval_id
            )
        return pending

    # an agent's catalog: its tools' names, descriptions and schemas (_catalog.py)
    async def _catalog(self, msg: Msg) -> None:
        agent = msg.subject.rpartition(".")[2]
        if msg.reply:
            await msg.respond(catalog_reply(self._registry, self._allowed_tools, agent))

    # one request
    async def _handle(self, msg: Msg) -> None:
        self._active += 1
        self._idle = anyio.Event() if self._active == 1 else self._idle
        try:
            reply = await self._answer(msg)
            if msg.reply:
                with contextlib.suppress(Exception):  # the caller gave up; nothing to tell
                    await msg.respond(reply)
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def _answer(self, msg: Msg) -> bytes:
        # tool names contain dots: everything after the agent token is the tool
        agent, _, tool = msg.subject[len(f"{self._subjects.prefix}.tool.") :].partition(".")
        request: ToolCallRequest | ToolRefusal
        try:
            request = parse_request(msg.data)
        except ToolRefusal as refusal:  # recorded in _steps, inside the span
            request = refusal
        parsed = request if isinstance(request, ToolCallRequest) else None
        # the calling run's span (from the request's headers) is this call's parent; every
        # step's record carries this span's ids (CallRecorder)
        with execute_tool_span(
            tool,
            agent=agent,
            call_id=parsed.call_id if parsed else None,
            conversation_id=parsed.conversation_id if parsed else None,
            run_id=parsed.run_id if parsed else None,
            parent=extract_context(msg.headers),
            args=parsed.args if parsed else None,
        ) as span:
            if parsed is not None and parsed.local is not None:
                # one phase of a call whose body the replica runs: the replica's execute_tool
                # span (the parent) is the call's; this one is the decision or the report
                span.update_name(f"tool.{parsed.local.phase} {tool}")
                span.set_attribute("agentd.tool.phase", parsed.local.phase)
            return await self._steps(msg, agent, tool, request)

    async def _steps(
        self, msg: Msg, agent: str, tool: str, request: ToolCallRequest | ToolRefusal
    ) -> bytes:
        trace_id = trace_id_of(msg.headers)
        if isinstance(request, ToolRefusal):
            refusal = request
            taint = self._calls.taint_of(agent, None, None)
            self._calls.records.emit(
                "tool.denied",
                agent=agent,
                trace_id=trace_id,
                tool=tool,
                decision="bad_request",
                rule=refusal.rule,
                reason=str(refusal),
                tainted=taint is not None,
                **(taint.fields() if taint is not None else {}),
            )
            return refusal.reply()
        call = ToolCall(
            agent,
            tool,
            dict(request.args),
            request.message_id,
            request.call_id,
            request.run_id,
            request.conversation_id,
            trace_id,
            taint=self._calls.taint_of(agent, request.conversation_id, request.message_id),
            untrusted=self._calls.untrusted(tool),
        )
        if request.local is not None:
            return await self.local.answer(call, request.local)
        self._calls.records.record("tool.requested", call, inputs={"tool": tool, "args": call.args})
        try:
            result, replayed = await self._calls.serve(call)
        except ToolRefusal as refusal:
            return refusal.reply()
        except nats.errors.Error as exc:  # the results bucket is out of reach: try again later
            self._calls.records.record(
                "tool.failed", call, decision="error", reason=f"unavailable: {exc!r}"
            )
            return ToolRefusal(
                "unavailable", f"tool results unreachable: {exc!r}", retryable=True
            ).reply()
        except Exception as exc:
            log.exception("tool call %s by %s failed inside the gateway", tool, agent)
            self._calls.records.record(
                "tool.failed", call, decision="error", reason=f"internal: {exc}"
            )
            return ToolRefusal("internal", f"the tool gateway failed: {exc}").reply()
        return ok_reply(result, replayed=replayed)
