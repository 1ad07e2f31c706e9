"""Tools defined in the graph: the replica runs the body, the gateway decides and keeps the key.

A LangChain tool in a graph module (`@tool`, `StructuredTool`, a `BaseTool` subclass) runs in
the replica, where its code and closures live. The worker intercepts every such call
(agentd/worker/_local_tools.py) and asks here first, in two requests on the tool's subject:

    begin: tool name not a gateway tool -> the agent exists -> arguments fit (the replica's
           validation) -> policy -> stored result? (replay) -> rate limit -> approval (parks)
           -> claim the key                             => a grant, or a stored result, or a refusal
    end:   the grant is this agent's, for this tool and key -> store the result under the key
           (or release the claim when the body failed) => tool.executed / tool.failed

The steps are `CallPipeline`'s, minus the registry and the agent spec's `tools` list: a local
tool is governed by policy alone (`tool:<name>`), since the spec cannot list what a graph module
defines. A local tool may not take a gateway tool's name: it would run under that tool's policy,
constraints and approvals while doing what the replica likes. The grant is the proof of a
decision: an `end` without one (a call that was denied, or never asked) stores nothing, so a
replica cannot plant a result that a rerun would then replay as executed.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Any

import anyio
import nats.errors
from pydantic import JsonValue

from agentd.bus import new_id
from agentd.policy import Decision, args_digest
from agentd.tools._pipeline import CLAIM_GRACE_S, CallPipeline
from agentd.tools._protocol import LocalBegin, LocalEnd, ToolRefusal, ok_reply
from agentd.tools._records import ToolCall
from agentd.tools._results import ResultStore
from agentd.tools._taint import Taint

__all__ = ["LocalCalls"]

# how long past its claim a grant is kept for the body's report; a later report is refused
GRANT_GRACE_S = 60.0
LOCAL_GRANT = "local grant"


@dataclass(frozen=True)
class _Grant:
    """A decided, claimed call whose body the replica may run and report."""

    agent: str
    tool: str
    message_id: str
    call_id: str
    key: str
    revision: int
    digest: str
    decision: Decision
    started: float
    expires_at: float


class LocalCalls:
    """The two phases of local tool calls, over the pipeline's decision steps and store."""

    def __init__(self, pipeline: CallPipeline) -> None:
        self._calls = pipeline
        self._grants: dict[str, _Grant] = {}
        # both on, always; the security tests' controls turn one off to show the attack it stops
        self.require_grant = True
        """An `end` stores a result only for a call this gateway granted."""
        self.refuse_gateway_names = True
        """A local tool may not take a gateway tool's name."""

    async def answer(self, call: ToolCall, local: LocalBegin | LocalEnd) -> bytes:
        """The reply to one phase; every refusal is recorded."""
        try:
            if isinstance(local, LocalBegin):
                return await self._begin(call, local)
            return await self._end(call, local)
        except ToolRefusal as refusal:
            return refusal.reply()
        except nats.errors.Error as exc:  # the results bucket is out of reach: try again later
            self._calls.records.record(
                "tool.failed", call, decision="error", reason=f"unavailable: {exc!r}"
            )
            return ToolRefusal(
                "unavailable", f"tool results unreachable: {exc!r}", retryable=True
            ).reply()

    # begin: the decision, then a grant (or a stored result)
    async def _begin(self, call: ToolCall, local: LocalBegin) -> bytes:
        pipeline, records = self._calls, self._calls.records
        inputs: dict[str, Any] = {"tool": call.tool, "args": call.args, "local": True}
        if local.described is not None:
            inputs["described"] = local.described
        if local.description is not None:
            inputs["description"] = local.description
        if local.schema_ is not None:
            inputs["schema"] = local.schema_
        records.record("tool.requested", call, inputs=inputs)
        self._admit(call, local)
        decision = pipeline._decide(call, call.args)
        digest = args_digest(call.args)
        assert pipeline.store is not None
        store = pipeline.store
        key = ResultStore.key(call.agent, call.message_id, call.call_id)
        grant = new_id()
        hold_s = self._hold_s(call.tool)
        claim = functools.partial(
            store.claim,
            key,
            tool=call.tool,
            args_digest=digest,
            run_id=call.run_id,
            hold_s=hold_s,
            grant=grant,  # in the claim too: any gateway of a cluster can check a report
        )
        if decision.effect == "approval_required":
            stored = await store.get(key)  # a parked call holds no claim: look first
            if stored is not None and stored.state == "done":
                return await self._replayed(call, pipeline._replay(call, stored, digest, decision))
            pipeline._rate_limit(call, decision.policy_version)
            await pipeline._park(call, call.args, digest, decision)
            revision, done = await claim()
        else:
            revision, done = await claim()
            if revision is not None:
                try:
                    pipeline._rate_limit(call, decision.policy_version)
                except ToolRefusal:
                    with anyio.CancelScope(shield=True):
                        await store.release(key, revision)
                    raise
        if done is not None:
            return await self._replayed(call, pipeline._replay(call, done, digest, decision))
        assert revision is not None
        now = time.monotonic()
        self._sweep(now)
        self._grants[grant] = _Grant(
            call.agent,
            call.tool,
            call.message_id,
            call.call_id,
            key,
            revision,
            digest,
            decision,
            now,
            now + hold_s + GRANT_GRACE_S,
        )
        return b'{"ok":true,"grant":"%s"}' % grant.encode()

    def _admit(self, call: ToolCall, local: LocalBegin) -> None:
        pipeline, records = self._calls, self._calls.records
        if self.refuse_gateway_names and pipeline._registry.get(call.tool) is not None:
            raise records.deny(
                call,
                "policy_denied",
                f"{call.tool} is a gateway tool: a tool defined in the graph may not take its "
                "name (it would run under that tool's policy); rename the graph's tool",
                "tool registry",
            )
        if pipeline._allowed_tools(call.agent) is None:
            raise records.deny(
                call, "policy_denied", f"no agent named {call.agent!r}", "agent spec"
            )
        if local.invalid is not None:
            raise records.deny(call, "invalid_args", local.invalid, f"schema {call.tool}")

    def _hold_s(self, tool: str) -> float:
        """How long the claim holds: the tool's `[tools.overrides]` timeout, else the default."""
        override = self._calls._config.overrides.get(tool)
        timeout_s = (override.timeout_s if override else None) or self._calls._config.call_timeout_s
        return timeout_s + CLAIM_GRACE_S

    def _sweep(self, now: float) -> None:
        for grant, held in list(self._grants.items()):
            if held.expires_at <= now:
                del self._grants[grant]

    async def _replayed(self, call: ToolCall, result: JsonValue) -> bytes:
        await self._taint(call)
        return ok_reply(result, replayed=True)

    async def _taint(self, call: ToolCall) -> None:
        """A local tool configured `trust = "untrusted"` taints the run that gets its result."""
        book = self._calls.taint
        if call.untrusted and book is not None:
            taint = Taint(call.result_record, call.tool, call.agent, time.time())
            await book.taint_received(taint, call.conversation_id, call.message_id)

    # end: what the body did, stored under the granted key
    async def _end(self, call: ToolCall, local: LocalEnd) -> bytes:
        records = self._calls.records
        held = self._grants.get(local.grant)
        if held is None:  # granted by another gateway of the cluster: its claim says so
            held = await self._claimed_elsewhere(call, local.grant)
        mine = held is not None and (held.agent, held.tool, held.message_id, held.call_id) == (
            call.agent,
            call.tool,
            call.message_id,
            call.call_id,
        )
        if held is None or not mine:
            if self.require_grant:
                why = "expired or unknown" if held is None else "another call's"
                raise records.deny(
                    call,
                    "bad_request",
                    f"no grant {local.grant!r} for {call.tool} call {call.call_id} of message "
                    f"{call.message_id} ({why}): a result is stored only for a call the "
                    "gateway decided",
                    LOCAL_GRANT,
                )
            return await self._store_ungranted(call, local)
        self._grants.pop(local.grant, None)
        version = held.decision.policy_version
        assert self._calls.store is not None
        duration_s = time.monotonic() - held.started
        if not local.ok:
            with anyio.CancelScope(shield=True):
                await self._calls.store.release(held.key, held.revision)
            records.record(
                "tool.failed",
                call,
                decision="error",
                reason=local.error or "the tool failed",
                policy_version=version,
                duration_s=duration_s,
            )
            return ToolRefusal("tool_failed", local.error or "the tool failed").reply()
        stored, ours = await self._calls.store.complete(
            held.key,
            held.revision,
            tool=call.tool,
            args_digest=held.digest,
            run_id=call.run_id,
            result=local.result,
        )
        records.record(
            "tool.executed",
            call,
            decision="ok",
            rule=held.decision.rule,
            outputs=local.result,
            policy_version=version,
            duration_s=duration_s,
            local=True,
        )
        await self._taint(call)
        return ok_reply(stored.result, replayed=not ours)

    async def _claimed_elsewhere(self, call: ToolCall, grant: str) -> _Grant | None:
        """The grant of a running claim of this call's key that names it (another gateway
        decided the call; a report may reach any gateway of the queue group)."""
        store = self._calls.store
        assert store is not None
        key = ResultStore.key(call.agent, call.message_id, call.call_id)
        claim = await store.get(key)
        if claim is None or claim.state != "running" or claim.grant != grant:
            return None
        point = self._calls.point
        version = point.version if point is not None else "off"
        rule = f"{LOCAL_GRANT} {grant} (decided by another gateway)"
        decision = Decision("allow", rule, "granted elsewhere", version, "access")
        now = time.monotonic()
        return _Grant(
            call.agent,
            claim.tool,
            call.message_id,
            call.call_id,
            key,
            claim.revision,
            claim.args_digest,
            decision,
            now,
            now,
        )

    async def _store_ungranted(self, call: ToolCall, local: LocalEnd) -> bytes:
        """The protection off (a test's control): the report is believed and stored."""
        assert self._calls.store is not None
        key = ResultStore.key(call.agent, call.message_id, call.call_id)
        with contextlib.suppress(Exception):
            stored, _ = await self._calls.store.complete(
                key,
                0,
                tool=call.tool,
                args_digest=args_digest(call.args),
                run_id=call.run_id,
                result=local.result,
            )
            return ok_reply(stored.result, replayed=False)
        return ToolRefusal("internal", "storing the ungranted result failed").reply()
