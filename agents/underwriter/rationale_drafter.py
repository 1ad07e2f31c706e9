"""The underwriter's LLM node: a model drafts the rationale a person reads; the rules decide.

Runs only when the agent's params name a model pool (`{"model": "main"}`) and the worker was
given the LLM gateway (AGENTD_LLM_URL, AGENTD_LLM_TOKEN): otherwise the assessment is the rules'
alone, as before. The model answers through strict structured output (a JSON schema the server
enforces while decoding), so even a tiny random-weight model yields a draft that parses. The
draft never changes the outcome, the score or the findings.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Rationale", "draft_rationale", "llm_model"]

SYSTEM_PROMPT = (
    "You are an underwriting assistant. You are given a loan application and the rule-based "
    "assessment of it. Explain the assessment to the applicant in plain words, in a summary "
    "of at most two sentences and up to three key factors. Never change the outcome."
)


class Rationale(BaseModel):
    """The drafted explanation: free text, bounded so a weak model cannot ramble."""

    model_config = ConfigDict(extra="forbid")
    summary: str = Field(max_length=240)
    key_factors: list[str] = Field(max_length=3)


DRAFT_TIMEOUT_S = 5.0


def llm_model(params: Mapping[str, Any] | None) -> str | None:
    """The model pool to draft with (the spawn params' `model`, else agent.toml's `model_pool`),
    or None when this replica has no model to use."""
    model = (params or {}).get("model") or os.environ.get("AGENTD_MODEL_POOL")
    if not isinstance(model, str) or not model or not os.environ.get("AGENTD_LLM_URL"):
        return None
    return model


async def draft_rationale(
    model: str, application: Mapping[str, Any], assessment: Mapping[str, Any]
) -> dict[str, Any]:
    """Ask `model` (a pool behind the gateway) for a rationale; returns it as a dict with the
    model's name, or an `error` saying why there is none (the assessment stands either way)."""
    import httpx  # only replicas that draft pay for these imports
    from langchain_openai import ChatOpenAI

    from agentd.telemetry import httpx_trace_hooks

    facts = {
        "application": dict(application),
        "outcome": assessment.get("outcome"),
        "risk_band": assessment.get("risk_band"),
        "findings": assessment.get("findings"),
    }
    # the call carries the run's trace context (the gateway's `chat` span is its child); the
    # client is closed with the call, so no connection outlives it
    # (over HTTPS when [gateway.tls] is set: the daemon names the CA to verify it with)
    ca_file = os.environ.get("AGENTD_LLM_CA_FILE")
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
    async with httpx.AsyncClient(event_hooks=httpx_trace_hooks(), verify=verify) as http:
        llm = ChatOpenAI(
            base_url=os.environ["AGENTD_LLM_URL"],
            api_key=os.environ.get("AGENTD_LLM_TOKEN", ""),
            model=model,
            temperature=0,
            max_completion_tokens=256,
            # within the run's deadline (intake waits 10 s): a slow or loading model, no draft
            max_retries=0,
            timeout=DRAFT_TIMEOUT_S,
            http_async_client=http,
        )
        drafter = llm.with_structured_output(Rationale, method="json_schema", strict=True)
        try:
            draft = await drafter.ainvoke(
                [("system", SYSTEM_PROMPT), ("user", json.dumps(facts, default=str))]
            )
        except Exception as exc:  # the model is advisory: its failure must not fail the run
            return {"model": model, "error": f"{type(exc).__name__}: {exc}"[:300]}
    rationale = draft if isinstance(draft, Rationale) else Rationale.model_validate(draft)
    return {"model": model, **rationale.model_dump()}
