"""The underwriter agent: answers an application with a deterministic risk assessment.

Intake asks it (`ctx.ask("underwriter", application)`); the run's output, the assessment, is
the answer. The rules live in underwriting_rules.py; this module only wires them into
LangGraph. When the agent's params name a model pool and the worker has the LLM gateway, a
second node drafts a rationale for people to read (rationale_drafter.py); the outcome stays
the rules'.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from rationale_drafter import draft_rationale, llm_model
from underwriting_rules import Finding, Metrics, assess

__all__ = ["RunIds", "build"]


class RunIds(Protocol):
    """The part of the agent's context this graph uses (agentd.worker.AgentContext)."""

    @property
    def run_id(self) -> str | None: ...

    # AgentContext also has `params: dict[str, Any]`; stand-ins without it draft nothing


class ApplicationInput(TypedDict, total=False):
    application_id: str | None
    applicant: str
    amount: float
    income: float | None
    monthly_debt: float
    term_months: int


class AssessmentOutput(TypedDict, total=False):
    application_id: str | None
    agent: str
    outcome: str
    risk_score: int | None
    risk_band: str
    metrics: Metrics
    findings: list[Finding]
    rules_version: str
    run_id: str | None


class RationaleOutput(AssessmentOutput, total=False):
    rationale: dict[str, Any]  # only with a model: the drafted explanation


class UnderwriterState(ApplicationInput, RationaleOutput, total=False):
    pass


def build(ctx: RunIds) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph factory named in agent.toml: `assess` (the rules), then `draft_rationale`
    when the params name a model and the replica has the LLM gateway."""

    def assess_application(state: UnderwriterState) -> AssessmentOutput:
        # the state holds the application's fields as sent; the rules check them
        result: AssessmentOutput = {**assess(dict(state)), "run_id": ctx.run_id}
        return result

    builder = StateGraph(
        UnderwriterState, input_schema=ApplicationInput, output_schema=RationaleOutput
    )
    builder.add_node("assess", assess_application)
    builder.add_edge(START, "assess")
    params: Mapping[str, Any] | None = getattr(ctx, "params", None)
    model = llm_model(params)
    if model is None:
        builder.add_edge("assess", END)
    else:

        async def draft(state: UnderwriterState) -> RationaleOutput:
            application = {k: state.get(k) for k in ApplicationInput.__annotations__}
            return {"rationale": await draft_rationale(model, application, dict(state))}

        builder.add_node("draft_rationale", draft)
        builder.add_edge("assess", "draft_rationale")
        builder.add_edge("draft_rationale", END)
    return builder.compile(name="underwriter")
