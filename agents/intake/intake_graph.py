"""The intake agent: the loan-application flow's front door.

validate ──(problems)──> reject
    └──> underwrite (ask underwriter) ──> review (ask compliance) ──> decide

Intake validates and normalises the application, asks the underwriter for a risk assessment,
asks compliance to review the application with that assessment, and answers with the decision,
its reasons and what each agent found. Both asks use the application id as the conversation
id, so one application's runs group under one conversation in every agent.

A failed ask (an agent down or too slow) fails the run: the worker retries it in place and, after
the agent's max_deliveries, dead-letters it. An unavailable agent is an outage, not a reason to
approve or decline anyone.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypedDict

from intake_rules import Application, Decision, Reason, decide, reject, validate_application
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

__all__ = ["ASK_TIMEOUT_S", "IntakeContext", "IntakeGraph", "build"]

# each consulted agent's deadline; agent.toml's run_timeout_s covers both and the rest
ASK_TIMEOUT_S = 10.0


class IntakeContext(Protocol):
    """The part of the agent's context this graph uses (agentd.worker.AgentContext)."""

    @property
    def run_id(self) -> str | None: ...

    @property
    def conversation_id(self) -> str | None: ...

    async def ask(
        self,
        to: str,
        payload: Any,
        *,
        timeout_s: float = 30.0,
        conversation_id: str | None = None,
    ) -> Any: ...


class IntakeInput(TypedDict):
    submitted: Any  # the message payload, whatever its shape: validation judges it


class DecisionOutput(TypedDict, total=False):
    application_id: str | None
    status: Literal["decided", "rejected"]
    decision: Literal["approved", "declined", "referred"] | None
    decided_by: list[str]
    reasons: list[Reason]
    summary: str
    application: Application | None
    underwriter: dict[str, Any] | None
    compliance: dict[str, Any] | None
    run_id: str | None


class IntakeState(DecisionOutput, total=False):
    submitted: Any
    problems: list[str]


def _route_after_validation(state: IntakeState) -> str:
    return "reject" if state.get("problems") else "underwrite"


def build(ctx: IntakeContext) -> IntakeGraph:
    """The graph factory named in agent.toml."""

    def validate(state: IntakeState) -> IntakeState:
        application, problems = validate_application(
            state.get("submitted"), default_id=ctx.conversation_id or ctx.run_id or "unknown"
        )
        submitted = state.get("submitted")
        claimed = submitted.get("application_id") if isinstance(submitted, dict) else None
        return {
            "application": application,
            "problems": problems,
            # echo what the sender called it, even when rejected, so replies can be matched
            "application_id": application["application_id"] if application else _text(claimed),
            "run_id": ctx.run_id,
        }

    def rejected(state: IntakeState) -> DecisionOutput:
        output = _output(reject(state.get("application_id"), state.get("problems") or []))
        output["underwriter"] = output["compliance"] = None
        return output

    async def underwrite(state: IntakeState) -> IntakeState:
        application = state["application"]
        assert application is not None  # routed here only when valid
        answer = await ctx.ask(
            "underwriter",
            dict(application),
            timeout_s=ASK_TIMEOUT_S,
            conversation_id=application["application_id"],
        )
        return {"underwriter": answer if isinstance(answer, dict) else {"answer": answer}}

    async def review(state: IntakeState) -> IntakeState:
        application = state["application"]
        assert application is not None
        answer = await ctx.ask(
            "compliance",
            {"application": dict(application), "underwriting": state.get("underwriter")},
            timeout_s=ASK_TIMEOUT_S,
            conversation_id=application["application_id"],
        )
        return {"compliance": answer if isinstance(answer, dict) else {"answer": answer}}

    def decided(state: IntakeState) -> DecisionOutput:
        application = state["application"]
        assert application is not None
        return _output(
            decide(
                application["application_id"],
                {"underwriter": state.get("underwriter"), "compliance": state.get("compliance")},
            )
        )

    builder = StateGraph(IntakeState, input_schema=IntakeInput, output_schema=DecisionOutput)
    builder.add_node("validate", validate)
    builder.add_node("reject", rejected)
    builder.add_node("underwrite", underwrite)
    builder.add_node("review", review)
    builder.add_node("decide", decided)
    builder.add_edge(START, "validate")
    builder.add_conditional_edges(
        "validate", _route_after_validation, {"reject": "reject", "underwrite": "underwrite"}
    )
    builder.add_edge("underwrite", "review")
    builder.add_edge("review", "decide")
    builder.add_edge("reject", END)
    builder.add_edge("decide", END)
    return IntakeGraph(builder.compile(name="intake"))


def _output(decision: Decision) -> DecisionOutput:
    return {
        "application_id": decision["application_id"],
        "status": decision["status"],
        "decision": decision["decision"],
        "decided_by": decision["decided_by"],
        "reasons": decision["reasons"],
        "summary": decision["summary"],
    }


def _text(value: Any) -> str | None:
    """An application id as sent, for the reply to a rejected application."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class IntakeGraph:
    """The compiled graph behind a thin adapter: the payload goes in whole, under `submitted`.

    LangGraph takes only a JSON object as input and silently drops keys its state does not
    declare; intake must see the payload as sent, to reject a list, a string or a misspelt field
    with a reason instead of failing the run or ignoring the field.
    """

    def __init__(self, graph: CompiledStateGraph[Any, Any, Any, Any]) -> None:
        self.graph = graph

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        return await self.graph.ainvoke({"submitted": input}, config, **kwargs)
