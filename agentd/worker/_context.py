"""The agent's context: what graph code may use besides plain LangGraph.

A graph never sees NATS: it calls `send`, `ask`, `call_tool` and reads the ids of the current
run. The ids live in context variables, so concurrent runs in one replica each see their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from dataclasses import dataclass, field
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client

from agentd.bus import Message, Subjects, new_id
from agentd.config import TOOL_NAME
from agentd.errors import AgentdError
from agentd.telemetry import current_span_ids, inject_nats_headers
from agentd.trace import DecisionRecord, TracePublisher

__all__ = ["AgentContext", "RunInfo", "SendFailed", "ToolCallFailed"]

# how long a tool call may take by default: long enough for a human approval; the daemon sets
# AGENTD_TOOL_TIMEOUT_S from its [tools] config (a worker never reads agentd.toml)
DEFAULT_TOOL_TIMEOUT_S = 330.0
# a tool name is subject tokens: a space, `*` or `>` would change the subject (or the server
# would close the connection), so such a name never leaves the replica
_TOOL_NAME = TOOL_NAME


class SendFailed(AgentdError):
    """The router refused a message (unknown recipient, policy, malformed) or an ask failed."""

    def __init__(self, message: str, *, code: str = "error") -> None:
        self.code = code
        super().__init__(message)


class ToolCallFailed(AgentdError):
    """A tool call ended without a result: denied, rate limited, not approved, or failed.

    `code` is the gateway's (`policy_denied`, `invalid_args`, `unknown_tool`, `rate_limited`,
    `approval_denied`, `approval_timeout`, `idempotency_conflict`, `tool_failed`, or
    `timeout` / `unavailable` when the gateway did not answer); `rule` names the rule that
    decided; `retry_after_s` says when a rate-limited call may succeed; `error` is the whole
    structured error, for graphs that route on it.
    """

    def __init__(self, tool: str, error: dict[str, Any]) -> None:
        self.tool = tool
        self.error = error
        self.code: str = str(error.get("code") or "error")
        self.rule: str | None = error.get("rule")
        self.retry_after_s: float | None = error.get("retry_after_s")
        self.approval_id: str | None = error.get("approval_id")
        self.retryable = bool(error.get("retryable"))
        rule = f" (rule {self.rule})" if self.rule else ""
        super().__init__(f"{tool}: {self.code}{rule}: {error.get('message', '')}")


@dataclass
class RunInfo:
    run_id: str
    message_id: str
    conversation_id: str
    sender: str
    reply_to: str | None = None
    replied: bool = False
    tool_calls: int = 0
    """Tool calls made so far in this run: the default call ids are c1, c2, ..."""
    model_call_ids: dict[str, int] = field(default_factory=dict)
    """How often each model tool call id was used in this run (gateway tools: a model that
    repeats an id gets `<id>#2`, ... so each call keeps a key of its own)."""
    record_ids: list[str] = field(default_factory=list)
    """Decision records made in this run: the inbox message is acked once they are stored."""
    taint_record: str | None = None
    """The router's `Agentd-Taint` header: the message came from a tainted run (informational;
    the tool gateway decides from the daemon's own state, not from this)."""


_current: contextvars.ContextVar[RunInfo | None] = contextvars.ContextVar(
    "agentd_run", default=None
)


class AgentContext:
    """Handed to graph factories; valid for the replica's lifetime."""

    def __init__(
        self,
        nc: Client,
        subjects: Subjects,
        agent: str,
        replica: str,
        params: dict[str, Any] | None = None,
        *,
        recorder: TracePublisher | None = None,
    ) -> None:
        self._nc = nc
        self._recorder = recorder
        self._subjects = subjects
        self.agent = agent
        self.replica = replica
        self.params: dict[str, Any] = params or {}
        """What the agent that spawned this one passed to `spawn` (empty otherwise)."""
        self.tool_timeout_s = _tool_timeout()
        self.catalog: list[dict[str, Any]] = []
        """The gateway's catalog of this agent's tools (the worker fetches it before the
        graph loads): name, description and JSON schema of each."""

    def tools(self) -> list[Any]:
        """This agent's tools as LangChain tools (`langchain_core.tools.StructuredTool`) that
        call the gateway: bind them to a model and give them to `ToolNode`. Each is governed
        like `call_tool`, keyed by the model's tool call id; a refusal comes back to the model
        as an error ToolMessage. See agentd.worker.gateway_tools and docs/agents.md."""
        from agentd.worker._gateway_tools import proxy_tools

        return list(proxy_tools(self, self.catalog))

    # the current run (inside a graph node)
    @property
    def run(self) -> RunInfo | None:
        return _current.get()

    @property
    def run_id(self) -> str | None:
        run = _current.get()
        return run.run_id if run else None

    @property
    def conversation_id(self) -> str | None:
        run = _current.get()
        return run.conversation_id if run else None

    @property
    def taint_record(self) -> str | None:
        """When the router marked this run's message as coming from a run tainted by untrusted
        content: the id of the record that tainted it. Only informational: the tool gateway
        holds its own record of which runs are tainted (agentd/tools/README.md, "Taint")."""
        run = _current.get()
        return run.taint_record if run else None

    def record(self, kind: str, **fields: Any) -> DecisionRecord | None:
        """Record a decision in the decision log (through the agent's trace stream).

        `kind` is one of `agentd.trace.RECORD_KINDS` or an extension `x.<name>`; fields are
        `DecisionRecord` fields (`inputs`, `outputs`, `decision`, `reason`, `rule`, `trace_id`,
        `parent_span_id`, ...), anything else goes to `attributes`. The run and conversation
        ids default to the current run's; agent, replica and lineage are the replica's. Never
        blocks and never raises: returns the record queued for publishing, or None when it was
        invalid or the replica's trace queue was full (logged either way).
        """
        if self._recorder is None:
            return None
        # the current span: the run's invoke_agent, or one the graph opened
        fields = {**current_span_ids(), **fields}
        run = _current.get()
        if run is not None:
            fields.setdefault("run_id", run.run_id)
            fields.setdefault("conversation_id", run.conversation_id)
        record = self._recorder.record(kind, **fields)
        if record is not None and run is not None:
            run.record_ids.append(record.id)
        return record

    def _enter(self, info: RunInfo) -> contextvars.Token[RunInfo | None]:
        return _current.set(info)

    def _exit(self, token: contextvars.Token[RunInfo | None]) -> None:
        _current.reset(token)

    async def send(
        self,
        to: str,
        payload: Any,
        *,
        conversation_id: str | None = None,
        reply_to: str | None = None,
        timeout_s: float = 5.0,
    ) -> str:
        """Send `payload` to agent `to` through the router; returns the message id."""
        message = Message.model_validate(
            {
                "from": self.agent,
                "to": to,
                "conversation_id": conversation_id or self.conversation_id or new_id(),
                "payload": payload,
                "reply_to": reply_to,
            }
        )
        reply = await self._nc.request(
            self._subjects.out(self.agent, to),
            message.to_json(),
            timeout=timeout_s,
            headers=inject_nats_headers(),  # the run's span: the receiving run's parent
        )
        answer = json.loads(reply.data)
        if not answer.get("ok"):
            err = answer.get("error", {})
            raise SendFailed(err.get("message", "refused"), code=err.get("code", "error"))
        return message.id

    async def reply(self, payload: Any) -> bool:
        """Answer the current message's sender now, before the run ends (the run's own output
        is then not sent). Returns False when the sender asked for no reply."""
        run = _current.get()
        if run is None:
            raise RuntimeError("reply() is only possible inside a run")
        if not run.reply_to or run.replied:
            return False
        body = {
            "ok": True,
            "message_id": run.message_id,
            "run_id": run.run_id,
            "agent": self.agent,
            "replica": self.replica,
            "output": payload,
        }
        await self._nc.publish(run.reply_to, json.dumps(body, default=str).encode())
        run.replied = True
        return True

    async def spawn(
        self, agent: str, params: dict[str, Any] | None = None, *, timeout_s: float = 60.0
    ) -> str:
        """Start an instance of `agent` for this one (within its spawn quota); returns the
        instance's name, to `ask` or `send`. It ends by itself once idle."""
        request = json.dumps({"agent": agent, "params": params or {}}).encode()
        reply = await self._nc.request(self._subjects.spawn(self.agent), request, timeout=timeout_s)
        answer = json.loads(reply.data)
        if not answer.get("ok"):
            err = answer.get("error", {})
            raise SendFailed(err.get("message", "spawn refused"), code=err.get("code", "error"))
        name: str = answer["agent"]
        return name

    async def ask(
        self, to: str, payload: Any, *, timeout_s: float = 30.0, conversation_id: str | None = None
    ) -> Any:
        """Send `payload` to `to` and wait for the output of the run it starts there."""
        reply_subject = self._subjects.reply(self.agent, new_id())
        sub = await self._nc.subscribe(reply_subject, max_msgs=1)
        try:
            await self.send(to, payload, conversation_id=conversation_id, reply_to=reply_subject)
            with anyio.fail_after(timeout_s):
                msg = await sub.next_msg(timeout=None)
        except TimeoutError:
            raise SendFailed(f"{to} did not answer within {timeout_s}s", code="timeout") from None
        finally:
            with contextlib.suppress(Exception):  # already gone after max_msgs=1
                await sub.unsubscribe()
        result = json.loads(msg.data)
        if not result.get("ok"):
            raise SendFailed(f"{to} failed: {result.get('error')}", code="run_failed")
        return result.get("output")

    async def call_tool(
        self,
        tool: str,
        args: dict[str, Any] | None = None,
        *,
        call_id: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """Call `tool` through the tool gateway and return its result; raise `ToolCallFailed`.

        The call's idempotency key is this run's message id plus `call_id`, which defaults to
        the call's place in the run (c1, c2, ...): a rerun of the same message (after a crash)
        makes the same calls with the same keys and gets the stored results back, so a side
        effect happens once. Keep the order of tool calls deterministic, or pass call ids.
        A call that needs human approval waits for it, up to `timeout_s` (default
        $AGENTD_TOOL_TIMEOUT_S, else 330 s).
        """
        run = _current.get()
        if run is None:
            raise RuntimeError("call_tool() is only possible inside a run")
        if not _TOOL_NAME.match(tool):
            error = {"code": "bad_request", "message": f"{tool!r} is not a tool name"}
            raise ToolCallFailed(tool, error)
        run.tool_calls += 1
        body = {
            "args": args or {},
            "message_id": run.message_id,
            "call_id": call_id or f"c{run.tool_calls}",
            "run_id": run.run_id,
            "conversation_id": run.conversation_id,
        }
        wait_s = timeout_s if timeout_s is not None else self.tool_timeout_s
        subject = self._subjects.tool(self.agent, tool)
        try:
            reply = await self._nc.request(
                subject, json.dumps(body).encode(), timeout=wait_s, headers=inject_nats_headers()
            )
        except nats.errors.NoRespondersError:
            error = {"code": "unavailable", "message": "no tool gateway is running"}
            raise ToolCallFailed(tool, {**error, "retryable": True}) from None
        except (TimeoutError, nats.errors.TimeoutError):
            error = {"code": "timeout", "message": f"no answer within {wait_s:g}s"}
            raise ToolCallFailed(tool, {**error, "retryable": True}) from None
        answer = json.loads(reply.data)
        if not answer.get("ok"):
            raise ToolCallFailed(tool, answer.get("error") or {"code": "error"})
        return answer.get("result")


def _tool_timeout() -> float:
    try:
        value = float(os.environ.get("AGENTD_TOOL_TIMEOUT_S", DEFAULT_TOOL_TIMEOUT_S))
    except ValueError:
        return DEFAULT_TOOL_TIMEOUT_S
    return value if value > 0 else DEFAULT_TOOL_TIMEOUT_S
