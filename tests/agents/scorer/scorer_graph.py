"""Scores an applicant and records the decision through `ctx.record`, as a graph would."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agentd.worker import AgentContext


class Application(TypedDict, total=False):
    applicant_id: str
    income: float
    score: float


def build(ctx: AgentContext) -> Any:
    async def score(state: Application) -> Application:
        value = min(1.0, state["income"] / 100_000)
        recorded = ctx.record(
            "x.loan.scored",
            inputs={"applicant_id": state["applicant_id"], "income": state["income"]},
            outputs={"score": value},
            decision="approve" if value >= 0.5 else "refer",
            rule="score >= 0.5",
        )
        assert recorded is not None
        return {"score": value}

    builder = StateGraph(Application)
    builder.add_node("score", score)
    builder.add_edge(START, "score")
    builder.add_edge("score", END)
    return builder.compile()
