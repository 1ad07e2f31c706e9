"""The compliance agent: reviews an application and its underwriting against fixed rules.

Intake asks it with `{"application": {...}, "underwriting": {...}}`; the run's output, the
review, is the answer. The rules live in compliance_rules.py; this module only wires them into
LangGraph.
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict

from compliance_rules import Finding, review
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

__all__ = ["RunIds", "build"]


class RunIds(Protocol):
    """The part of the agent's context this graph uses (agentd.worker.AgentContext)."""

    @property
    def run_id(self) -> str | None: ...


class ReviewInput(TypedDict, total=False):
    application: dict[str, Any]
    underwriting: dict[str, Any] | None


class ReviewOutput(TypedDict, total=False):
    application_id: str | None
    agent: str
    outcome: str
    findings: list[Finding]
    rules_version: str
    run_id: str | None


class ComplianceState(ReviewInput, ReviewOutput, total=False):
    pass


def build(ctx: RunIds) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The graph factory named in agent.toml: one node that reviews the application."""

    def review_application(state: ComplianceState) -> ReviewOutput:
        application = state.get("application")
        result: ReviewOutput = {
            **review(
                application if isinstance(application, dict) else {}, state.get("underwriting")
            ),
            "run_id": ctx.run_id,
        }
        return result

    builder = StateGraph(ComplianceState, input_schema=ReviewInput, output_schema=ReviewOutput)
    builder.add_node("review", review_application)
    builder.add_edge(START, "review")
    builder.add_edge("review", END)
    return builder.compile(name="compliance")
