"""The underwriter agent: answers an application with a deterministic risk assessment.

Intake asks it (`ctx.ask("underwriter", application)`); the run's output, the assessment, is
the answer. The rules live in underwriting_rules.py; this module only wires them into LangGraph.
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from underwriting_rules import Finding, Metrics, assess

__all__ = ["RunIds", "build"]


class RunIds(Protocol):
    """The part of the agent's context this graph uses (agentd.worker.AgentContext)."""

    @property
    def run_id(self) -> str | None: ...


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


class UnderwriterState(ApplicationInput, AssessmentOutput, total=False):
    pass


def build(ctx: RunIds) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph factory named in agent.toml: one node that assesses the application."""

    def assess_application(state: UnderwriterState) -> AssessmentOutput:
        # the state holds the application's fields as sent; the rules check them
        result: AssessmentOutput = {**assess(dict(state)), "run_id": ctx.run_id}
        return result

    builder = StateGraph(
        UnderwriterState, input_schema=ApplicationInput, output_schema=AssessmentOutput
    )
    builder.add_node("assess", assess_application)
    builder.add_edge(START, "assess")
    builder.add_edge("assess", END)
    return builder.compile(name="underwriter")
