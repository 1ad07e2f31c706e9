"""The steps of one tool call, in order, each recorded as one decision.

    tool exists and is in the agent's spec -> arguments fit the schema -> policy
    -> stored result? (replay) -> rate limit -> human approval (parks) -> claim
    -> a running slot (per agent, per tool) -> run until the deadline -> store

The order matters: the spec and schema come before policy, so policy decides on exactly the
arguments that will run (validated, in JSON form); policy comes before the stored result, so a
revoked tool is not replayed either; the rate limit and approval come after it, so a replay costs
no tokens and needs no second approval. A call that needs no approval claims its key at once
(one round trip that also finds a stored result) and gives the claim back if the rate limit
refuses it; a call that needs approval looks for a stored result, parks, and claims only once
approved, so a parked call holds no key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import BaseModel, JsonValue

from agentd.config import ToolsConfig
from agentd.errors import RateLimited, ToolError
from agentd.policy import ApprovalBinding, Decision, DecisionPoint, RateKey, Request, args_digest
from agentd.tools._approvals import ApprovalBook, ApprovalOutcome, PendingApproval, new_approval_id
from agentd.tools._host import ToolSandbox, run_tool
from agentd.tools._mcp_schema import McpToolSpec
from agentd.tools._protocol import ErrorCode, ToolRefusal
from agentd.tools._records import CallRecorder, ToolCall
from agentd.tools._registry import InvalidArguments, ToolRegistry, ToolSpec
from agentd.tools._results import CallRecord, ResultStore
from agentd.tools._running import RunningCalls, TooManyRunning
from agentd.tools._taint import Taint, TaintBook

__all__ = ["CallPipeline"]

# how long past a tool's timeout its claim holds before another copy may take the call over
CLAIM_GRACE_S = 5.0
POLICY_OFF = "policy off"


@dataclass
class _Shared:
    """The outcome of a call that copies of it (same idempotency key) in this gateway share."""

    tool: str
    digest: str
    done: anyio.Event = field(default_factory=anyio.Event)
    ok: bool = False
    result: JsonValue = None
    refusal: ToolRefusal | None = None


class CallPipeline:
    """Runs tool calls through the steps; shared by every request a gateway serves."""

    def __init__(
        self,
        *,
        point: DecisionPoint | None,
        registry: ToolRegistry,
        allowed_tools: Callable[[str], list[str] | None],
        record: Callable[..., None],
        config: ToolsConfig,
        book: ApprovalBook,
        taint: TaintBook | None = None,
        policy_subject: Callable[[str], str] | None = None,
    ) -> None:
        self.point = point
        # whom policy and limits.toml see for a caller: a replica's agent name, a registered
        # external agent's `ext:<name>` (the daemon knows which)
        self.subject_of: Callable[[str], str] = policy_subject or (lambda agent: agent)
        self.taint = taint
        self.store: ResultStore | None = None
        """Set by the gateway once the results bucket exists."""
        self.sandboxes: Mapping[str, ToolSandbox] = {}
        """Each isolated tool's sandbox (none: its process runs unconfined)."""
        self._registry = registry
        self._allowed_tools = allowed_tools
        self.records = CallRecorder(record)
        self._config = config
        self._book = book
        self._shared: dict[str, _Shared] = {}
        self.running = RunningCalls(
            per_agent=config.max_running_per_agent, per_tool=config.max_running_per_tool
        )

    def untrusted(self, tool: str) -> bool:
        """Is `tool` untrusted: by `[tools.overrides."<tool>"].trust`, else its declaration."""
        override = self._config.overrides.get(tool)
        if override is not None and override.trust is not None:
            return override.trust == "untrusted"
        spec = self._registry.get(tool)
        return spec is not None and spec.trust == "untrusted"

    def taint_of(
        self, agent: str, conversation_id: str | None, message_id: str | None
    ) -> Taint | None:
        """The daemon's record of whether this call's run is tainted (never the caller's)."""
        return (
            None if self.taint is None else self.taint.of_call(agent, conversation_id, message_id)
        )

    async def serve(self, call: ToolCall) -> tuple[JsonValue, bool]:
        """Run `call` through every step: its result and whether it was replayed, or a
        `ToolRefusal` (already recorded). An untrusted tool's result (run or replayed) taints
        the calling run before the caller sees it."""
        result, replayed = await self._serve(call)
        if call.untrusted and self.taint is not None:
            taint = Taint(call.result_record, call.tool, call.agent, time.time())
            await self.taint.taint_received(taint, call.conversation_id, call.message_id)
        return result, replayed

    async def _serve(self, call: ToolCall) -> tuple[JsonValue, bool]:
        spec, args = self._admit(call)
        json_args = args.model_dump(mode="json")
        digest = args_digest(json_args)
        decision = self._decide(call, json_args)
        unkeyed = self.unkeyed(spec, call)
        if unkeyed is not None:  # a rerun repeats no effect: nothing to claim or store
            return await self._execute(call, spec, args, json_args, digest, decision, None, unkeyed)
        assert self.store is not None
        key = ResultStore.key(call.agent, call.message_id, call.call_id)
        if decision.effect == "approval_required":
            # a parked call holds no claim, so look for a stored result before parking
            stored = await self.store.get(key)
            if stored is not None and stored.state == "done":
                return self._replay(call, stored, digest, decision), True
        shared = self._shared.get(key)
        if shared is not None:  # a copy of this call is in progress here: share its outcome
            return await self._follow(call, shared, digest, decision), True
        shared = self._shared[key] = _Shared(call.tool, digest)
        try:
            result, replayed = await self._execute(
                call, spec, args, json_args, digest, decision, key
            )
            shared.ok, shared.result = True, result
            return result, replayed
        except ToolRefusal as refusal:
            shared.refusal = refusal
            raise
        finally:
            shared.done.set()
            del self._shared[key]

    def unkeyed(self, spec: ToolSpec, call: ToolCall) -> str | None:
        """Why `call` is not deduplicated by its key, or None (it is). Every call is, but that
        of an MCP tool a *trusted* server annotates `readOnlyHint` or `idempotentHint`: running
        it again has no effect a stored result would spare, so the claim and the store (two
        KV round trips) are left out. An untrusted server's hints are not believed (MCP: tool
        annotations are untrusted unless they come from a trusted server)."""
        if not isinstance(spec, McpToolSpec) or call.untrusted:
            return None
        return spec.no_effect_to_repeat

    def _admit(self, call: ToolCall) -> tuple[ToolSpec, BaseModel]:
        spec = self._registry.get(call.tool)
        if spec is None:
            raise self.records.deny(
                call, "unknown_tool", f"no tool named {call.tool!r}", "tool registry"
            )
        allowed = self._allowed_tools(call.agent)
        if allowed is None:
            raise self.records.deny(
                call, "policy_denied", f"no agent named {call.agent!r}", "agent spec"
            )
        if call.tool not in allowed:
            listed = ", ".join(allowed) or "none"
            raise self.records.deny(
                call,
                "policy_denied",
                f"{call.tool} is not among {call.agent}'s tools ({listed})",
                f"agent spec {call.agent}: tools",
            )
        try:
            return spec, spec.validate(call.args)
        except InvalidArguments as exc:
            raise self.records.deny(call, "invalid_args", str(exc), f"schema {call.tool}") from None

    def _decide(self, call: ToolCall, args: dict[str, Any]) -> Decision:
        if self.point is None:
            return Decision("allow", POLICY_OFF, "policy is off", "off", "access")
        tainted = call.taint is not None
        decision = self.point.decide(
            Request(self.subject_of(call.agent), f"tool:{call.tool}", "call", args, tainted=tainted)
        )
        if decision.effect == "deny":
            raise self.records.deny(
                call,
                "policy_denied",
                decision.reason,
                decision.rule,
                policy_version=decision.policy_version,
            )
        return decision

    def _replay(
        self, call: ToolCall, stored: CallRecord, digest: str, decision: Decision
    ) -> JsonValue:
        self._same_call(call, stored.tool, stored.args_digest, digest, decision)
        self.records.record(
            "tool.executed",
            call,
            decision="replayed",
            rule=decision.rule,
            outputs=stored.result,
            policy_version=decision.policy_version,
            reason=f"the stored result of run {stored.run_id}",
        )
        return stored.result

    def _same_call(
        self, call: ToolCall, tool: str, stored_digest: str, digest: str, decision: Decision
    ) -> None:
        """A key is one call: a rerun that changed the tool or arguments is refused."""
        if (tool, stored_digest) != (call.tool, digest):
            raise self.records.deny(
                call,
                "idempotency_conflict",
                f"call {call.call_id} of message {call.message_id} was {tool} with other "
                "arguments; a rerun must repeat a call exactly (or use another call_id)",
                "idempotency",
                policy_version=decision.policy_version,
            )

    async def _follow(
        self, call: ToolCall, shared: _Shared, digest: str, decision: Decision
    ) -> JsonValue:
        self._same_call(call, shared.tool, shared.digest, digest, decision)
        await shared.done.wait()
        if shared.refusal is not None or not shared.ok:
            refusal = shared.refusal or ToolRefusal(
                "unavailable", "the call was interrupted (the gateway stops)", retryable=True
            )
            self.records.record(
                "tool.denied",
                call,
                decision=refusal.code,
                rule=refusal.rule,
                reason=f"a copy of this call ended so: {refusal}",
                policy_version=decision.policy_version,
            )
            raise refusal
        done = CallRecord("done", shared.tool, shared.digest, None, result=shared.result)
        return self._replay(call, done, digest, decision)

    async def _execute(
        self,
        call: ToolCall,
        spec: ToolSpec,
        args: BaseModel,
        json_args: dict[str, Any],
        digest: str,
        decision: Decision,
        key: str | None,
        unkeyed: str | None = None,
    ) -> tuple[JsonValue, bool]:
        """Rate limit, approval, claim of `key`, a running slot, the run, the store; with no
        `key` (`unkeyed`: why) the same without the claim and the store."""
        version = decision.policy_version
        assert self.store is not None
        override = self._config.overrides.get(spec.name)
        timeout_s = (
            (override.timeout_s if override else None)
            or spec.timeout_s
            or self._config.call_timeout_s
        )
        revision: int | None = None
        done: CallRecord | None = None
        if key is None:
            self._rate_limit(call, version)
            if decision.effect == "approval_required":
                await self._park(call, json_args, digest, decision)
        elif decision.effect == "approval_required":
            self._rate_limit(call, version)
            await self._park(call, json_args, digest, decision)
            revision, done = await self._claim(key, call, digest, timeout_s)
        else:
            # the common case in one round trip: the claim's create either wins or finds the
            # stored result; a replay spends no rate-limit token, so the limit comes after it
            revision, done = await self._claim(key, call, digest, timeout_s)
            if revision is not None:
                try:
                    self._rate_limit(call, version)
                except ToolRefusal:
                    await self._release(key, revision)
                    raise
        if done is not None:  # stored already (a rerun), or another gateway finished it
            return self._replay(call, done, digest, decision), True
        try:
            slot = self.running.take(
                call.agent,
                spec.name,
                tool_limit=(override.max_running if override else None) or spec.max_running,
            )
        except TooManyRunning as exc:
            await self._release(key, revision)
            raise self.records.deny(
                call, "rate_limited", str(exc), exc.rule, policy_version=version, retryable=True
            ) from None
        started = time.monotonic()
        sandbox = self.sandboxes.get(spec.name)
        # an isolated call's records name the sandbox its process ran in
        boxed = {"sandbox": sandbox.plan.digest} if sandbox is not None else {}
        try:
            result = await run_tool(
                spec,
                args,
                timeout_s=timeout_s,
                isolated=override.isolated if override else None,
                on_finished=slot.release,
                sandbox=sandbox,
            )
        except ToolError as exc:
            await self._release(key, revision)
            self.records.record(
                "tool.failed",
                call,
                decision="error",
                reason=str(exc),
                policy_version=version,
                retryable=exc.retryable,
                duration_s=time.monotonic() - started,
                **boxed,
            )
            raise ToolRefusal("tool_failed", str(exc), retryable=exc.retryable) from None
        stored, ours = result, True
        if key is not None and revision is not None:
            record, ours = await self.store.complete(
                key, revision, tool=call.tool, args_digest=digest, run_id=call.run_id, result=result
            )
            stored = record.result
        self.records.record(
            "tool.executed",
            call,
            decision="ok",
            rule=decision.rule,
            outputs=result,
            policy_version=version,
            duration_s=time.monotonic() - started,
            **boxed,
            **({"not_stored": unkeyed} if unkeyed else {}),
        )
        return stored, not ours

    async def _claim(
        self, key: str, call: ToolCall, digest: str, timeout_s: float
    ) -> tuple[int, None] | tuple[None, CallRecord]:
        assert self.store is not None
        return await self.store.claim(
            key,
            tool=call.tool,
            args_digest=digest,
            run_id=call.run_id,
            hold_s=timeout_s + CLAIM_GRACE_S,
        )

    async def _release(self, key: str | None, revision: int | None) -> None:
        """Give the claim back (a call that did not run, or failed), shielded from cancellation."""
        if key is None or revision is None or self.store is None:
            return
        with anyio.CancelScope(shield=True):
            await self.store.release(key, revision)

    def _rate_limit(self, call: ToolCall, version: str) -> None:
        if self.point is None:
            return
        limiter = self.point.limiter
        try:
            limiter.acquire_tool_call(self.subject_of(call.agent), call.tool)
        except RateLimited as exc:
            rule = "rate limit"
            for key in (RateKey.agent_tool(call.agent, call.tool), RateKey.tool(call.tool)):
                limit, left = limiter.limits.limit_for(key), limiter.available(key)
                if limit is not None and left is not None and left < 1:
                    rule = limit.rule
                    break
            raise self.records.deny(
                call,
                "rate_limited",
                str(exc),
                rule,
                policy_version=version,
                retry_after_s=exc.retry_after_s,
                retryable=True,
            ) from None

    async def _park(
        self, call: ToolCall, args: dict[str, Any], digest: str, decision: Decision
    ) -> None:
        tainted = call.taint is not None
        request = Request(call.agent, f"tool:{call.tool}", "call", args, tainted=tainted)
        binding = ApprovalBinding.for_request(request, decision, ttl_s=self._config.approval_ttl_s)
        now = time.time()
        pending = PendingApproval(
            new_approval_id(),
            call.agent,
            call.tool,
            args,
            digest,
            call.call_id,
            call.run_id,
            call.message_id,
            call.conversation_id,
            call.trace_id,
            decision.policy_version,
            decision.rule,
            decision.reason,
            now,
            now + self._config.approval_timeout_s,
            request,
            binding,
            taint=call.taint,
        )
        self._book.add(pending)
        self.records.record(
            "tool.approval_requested",
            call,
            decision="approval_required",
            rule=decision.rule,
            reason=decision.reason,
            approval_id=pending.id,
            args_digest=digest,
            expires_at=pending.expires_at,
            policy_version=decision.policy_version,
        )
        try:
            outcome = await self._book.wait(pending)
        finally:  # cancelled: the call is no longer waiting
            self._book.answer(pending, ApprovalOutcome(False, None, "cancelled", "cancelled"))
        fields: dict[str, Any] = {
            "approval_id": pending.id,
            "operator": outcome.operator,
            "rule": outcome.rule,
            "reason": outcome.reason,
            "policy_version": decision.policy_version,
        }
        if outcome.granted:
            self.records.record("tool.approved", call, decision="approve", **fields)
            return
        kind = {"approval timeout": "timeout", "shutdown": "shutdown"}.get(outcome.rule, "reject")
        self.records.record("tool.rejected", call, decision=kind, **fields)
        codes: dict[str, ErrorCode] = {"timeout": "approval_timeout", "shutdown": "unavailable"}
        raise ToolRefusal(
            codes.get(kind, "approval_denied"),
            outcome.reason,
            rule=outcome.rule,
            approval_id=pending.id,
            retryable=kind == "shutdown",
        )
