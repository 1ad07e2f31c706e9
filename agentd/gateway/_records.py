"""The `llm.call` decision record of one call, what its span says of how it ended, and the
OpenAI-shaped answer to a refused one.

Prompts and completions are not stored: inputs and outputs are SHA-256 digests with sizes, so
an auditor holding a transcript can prove it is the one that went through the gateway.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from aiohttp import web

from agentd.gateway._outside_tokens import OutsideToken
from agentd.gateway._policy import PolicyAnswer
from agentd.gateway._protocol import error_body
from agentd.gateway._relay import CallOutcome
from agentd.gateway._tokens import TokenHolder
from agentd.telemetry import ChatSpan

__all__ = ["Refusal", "call_record", "describe_outcome", "refusal_response", "unauthenticated"]


class Refusal(Exception):
    """A call refused before it went upstream: HTTP status, OpenAI error type and code."""

    def __init__(self, status: int, kind: str, message: str, *, code: str, **fields: Any) -> None:
        super().__init__(message)
        self.status, self.kind, self.code = status, kind, code
        self.fields = fields
        self.headers: dict[str, str] = {}


def unauthenticated(outside: OutsideToken | None) -> Refusal:
    """The 401 for a token the book does not accept; an outside token that was issued says
    why it no longer is (revoked by whom, or expired)."""
    if outside is None:
        return Refusal(
            401,
            "authentication_error",
            "missing or unknown bearer token: use the token in AGENTD_LLM_TOKEN",
            code="invalid_api_key",
        )
    state = outside.state()
    by = f" (by {outside.revoked_by})" if state == "revoked" else ""
    return Refusal(
        401,
        "authentication_error",
        f"the token {outside.name!r} is {state}{by}: ask the operator for a new one "
        "(agentctl tokens issue)",
        code=f"token_{state}",
    )


def refusal_response(refused: Refusal) -> web.Response:
    body = error_body(
        str(refused), refused.kind, code=refused.code, param=refused.fields.get("param")
    )
    headers = {**refused.headers, "Content-Type": "application/json"}
    return web.Response(body=body, status=refused.status, headers=headers)


def call_record(
    holder: TokenHolder | None,
    raw: bytes,
    started: float,
    fields: dict[str, Any],
    *,
    refusal: Refusal | None = None,
    outcome: CallOutcome | None = None,
    rule: PolicyAnswer | None = None,
) -> dict[str, Any]:
    """The fields of one `llm.call` record: a refused call or a relayed one."""
    attributes: dict[str, Any] = dict(fields)
    lineage: dict[str, Any] = {}
    attributes["latency_s"] = round(time.perf_counter() - started, 6)
    if holder is not None and holder.kind != "replica":  # ext:<name>: policy's subject
        attributes["subject"] = holder.subject
    reason: str | None
    rule_name: str | None
    if refusal is not None:
        decision, reason = refusal.code, str(refusal)
        attributes["status"] = refusal.status
        rule_name = refusal.fields.get("rule")
        if "retry_after_s" in refusal.fields:
            attributes["retry_after_s"] = refusal.fields["retry_after_s"]
    else:
        assert outcome is not None
        decision, reason = outcome.decision, outcome.reason
        rule_name = rule.rule if rule is not None else None
        endpoint = outcome.endpoint
        attributes.update(
            status=outcome.status,
            attempts=outcome.attempts,
            tokens_in=outcome.tokens_in,
            tokens_out=outcome.tokens_out,
            finish_reason=outcome.finish_reason,
            ttft_s=round(outcome.ttft_s, 6) if outcome.ttft_s is not None else None,
        )
        if outcome.failures:
            attributes["failures"] = outcome.failures
        if endpoint is not None:
            attributes.update(model_replica=endpoint.replica, served_name=endpoint.served_name)
            lineage = {"model_id": endpoint.model, "model_revision": endpoint.revision}
    inputs = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)} if raw else None
    outputs = None
    if outcome is not None and outcome.output_digest is not None:
        outputs = {"sha256": outcome.output_digest, "bytes": outcome.output_bytes}
    if rule is not None and rule.policy_version:
        lineage["policy_version"] = rule.policy_version
    return {
        "agent": holder.agent if holder else None,
        "replica": holder.replica if holder else None,
        "decision": decision,
        "rule": rule_name,
        "reason": reason,
        "inputs": inputs,
        "outputs": outputs,
        "lineage": {k: v for k, v in lineage.items() if v is not None} or None,
        "attributes": {k: v for k, v in attributes.items() if v is not None},
    }


def describe_outcome(span: ChatSpan, outcome: CallOutcome) -> None:
    """What the relay learnt, on the call's span."""
    endpoint = outcome.endpoint
    if endpoint is not None:
        span.set_server(endpoint.base_url)
    if outcome.decision == "ok":
        span.set_response(
            model=outcome.response_model or (endpoint.served_name if endpoint else None),
            response_id=outcome.response_id,
            input_tokens=outcome.tokens_in,
            output_tokens=outcome.tokens_out,
            finish_reasons=[outcome.finish_reason] if outcome.finish_reason else None,
        )
    else:  # the HTTP status the caller got (an upstream's 4xx passes through as it was)
        span.set_error(str(outcome.status), outcome.reason, status=outcome.status)
