"""Intake's rules: validate and normalise a loan application, and combine the underwriter's and
compliance's findings into one explainable decision.

Pure functions over JSON values: no NATS, no LangGraph, so every rule is unit-testable. The
rules live in code on purpose: an agent's version is a hash of its sources, so changing a rule
shows as a new agent version in `agentctl ps` and in every record that names the agent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

__all__ = [
    "APPLICATION_FIELDS",
    "Application",
    "Decision",
    "Reason",
    "decide",
    "reject",
    "validate_application",
]

DecisionName = Literal["approved", "declined", "referred"]

# every field an application may carry; anything else is a mistake worth telling the sender
APPLICATION_FIELDS = (
    "application_id",
    "applicant",
    "amount",
    "income",
    "monthly_debt",
    "term_months",
)
APPLICATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
APPLICANT_MAX_CHARS = 200
DEFAULT_TERM_MONTHS = 36
TERM_MONTHS_RANGE = (6, 84)
# far above any product's cap: only catches typos such as an extra three zeros' worth of digits
AMOUNT_PLAUSIBLE_MAX = 10_000_000.0

# the agents intake consults, in the order they are asked
CONSULTED = ("underwriter", "compliance")
_SEVERITY: dict[str, int] = {"pass": 0, "refer": 1, "decline": 2}
_DECISION: dict[str, DecisionName] = {
    "pass": "approved",
    "refer": "referred",
    "decline": "declined",
}


class Application(TypedDict):
    """A validated, normalised application: what underwriter and compliance receive."""

    application_id: str
    applicant: str
    amount: float
    income: float | None  # yearly; None when not stated (the underwriter then refers)
    monthly_debt: float
    term_months: int


class Reason(TypedDict):
    """One finding that explains a decision: which agent applied which rule, with what result."""

    agent: str
    rule: str
    outcome: str
    detail: str


class Decision(TypedDict):
    """Intake's reply: the decision, why, and who decided what."""

    application_id: str | None
    status: Literal["decided", "rejected"]
    decision: DecisionName | None
    decided_by: list[str]
    reasons: list[Reason]
    summary: str


def _number(value: Any, field: str, problems: list[str]) -> float | None:
    """A finite number from a JSON number or a numeric string ("12000", " 12000.50 ")."""
    if isinstance(value, bool):  # bool is an int in Python, never an amount
        problems.append(f"{field}: must be a number, got {value!r}")
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            problems.append(f"{field}: must be a number, got {value!r}")
            return None
    else:
        problems.append(f"{field}: must be a number, got {type(value).__name__}")
        return None
    if not math.isfinite(number):
        problems.append(f"{field}: must be a finite number, got {value!r}")
        return None
    return number


def _application_id(value: Any, default_id: str, problems: list[str]) -> str | None:
    rule = "1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
    if value is None:
        if not APPLICATION_ID.match(default_id):
            problems.append(
                f"application_id: required, as the conversation id {default_id!r} cannot "
                f"serve as one ({rule})"
            )
            return None
        return default_id
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    if not isinstance(value, str) or not APPLICATION_ID.match(value.strip()):
        problems.append(f"application_id: must be {rule}, got {value!r}")
        return None
    return value.strip()


def _applicant(value: Any, problems: list[str]) -> str | None:
    if value is None:
        problems.append("applicant: required (the applicant's full name)")
        return None
    if not isinstance(value, str):
        problems.append(f"applicant: must be a name (a string), got {type(value).__name__}")
        return None
    name = " ".join(value.split())
    if not name:
        problems.append("applicant: must not be empty")
        return None
    if len(name) > APPLICANT_MAX_CHARS:
        problems.append(f"applicant: longer than {APPLICANT_MAX_CHARS} characters")
        return None
    return name


def validate_application(
    submitted: Any, *, default_id: str
) -> tuple[Application | None, list[str]]:
    """Check and normalise a submitted application.

    Returns the normalised application and no problems, or None and every problem found (all of
    them, so the sender fixes the application in one go). `default_id` becomes the application
    id when the application carries none (intake passes its conversation id).
    """
    if not isinstance(submitted, Mapping):
        kind = "null" if submitted is None else type(submitted).__name__
        return None, [f"the application must be a JSON object, got {kind}"]
    problems: list[str] = []
    unknown = sorted(str(k) for k in submitted if k not in APPLICATION_FIELDS)
    for key in unknown:
        problems.append(f"{key}: unknown field (known: {', '.join(APPLICATION_FIELDS)})")

    application_id = _application_id(submitted.get("application_id"), default_id, problems)
    applicant = _applicant(submitted.get("applicant"), problems)

    amount: float | None = None
    if submitted.get("amount") is None:
        problems.append("amount: required (the amount to borrow)")
    else:
        amount = _number(submitted["amount"], "amount", problems)
        # judged in cents, as lent: 0.004 would become a loan of 0.00
        if amount is not None and not 0.01 <= round(amount, 2) <= AMOUNT_PLAUSIBLE_MAX:
            problems.append(
                f"amount: must be from 0.01 to {AMOUNT_PLAUSIBLE_MAX:,.2f}, got {amount:g}"
            )
            amount = None

    income: float | None = None
    if submitted.get("income") is not None:
        income = _number(submitted["income"], "income", problems)
        if income is not None and income < 0:
            problems.append("income: must not be negative")

    monthly_debt: float | None = 0.0
    if submitted.get("monthly_debt") is not None:
        monthly_debt = _number(submitted["monthly_debt"], "monthly_debt", problems)
        if monthly_debt is not None and monthly_debt < 0:
            problems.append("monthly_debt: must not be negative")

    term_months: int | None = DEFAULT_TERM_MONTHS
    if submitted.get("term_months") is not None:
        term = _number(submitted["term_months"], "term_months", problems)
        low, high = TERM_MONTHS_RANGE
        if term is not None and (term != int(term) or not low <= term <= high):
            problems.append(f"term_months: must be a whole number from {low} to {high}")
        term_months = int(term) if term is not None else None

    if problems:
        return None, problems
    assert application_id is not None and applicant is not None and amount is not None
    assert monthly_debt is not None and term_months is not None
    return (
        Application(
            application_id=application_id,
            applicant=applicant,
            amount=round(amount, 2),
            income=None if income is None else round(income, 2),
            monthly_debt=round(monthly_debt, 2),
            term_months=term_months,
        ),
        [],
    )


def reject(application_id: str | None, problems: list[str]) -> Decision:
    """The reply to an application that could not be assessed: not a credit decision."""
    return Decision(
        application_id=application_id,
        status="rejected",
        decision=None,
        decided_by=["intake"],
        reasons=[
            Reason(agent="intake", rule="validation", outcome="reject", detail=p) for p in problems
        ],
        summary=f"rejected by intake: {len(problems)} problem(s) with the application; "
        "fix them and submit again",
    )


def _outcome_of(agent: str, assessment: Any) -> tuple[str, list[Reason]]:
    """The agent's overall outcome and its findings; an unusable answer is referred to a human
    (never approved) and says so."""
    if not isinstance(assessment, Mapping) or assessment.get("outcome") not in _SEVERITY:
        return "refer", [
            Reason(
                agent=agent,
                rule="answer",
                outcome="refer",
                detail=f"{agent} returned no usable assessment: a human must review",
            )
        ]
    findings: list[Reason] = []
    for finding in assessment.get("findings") or []:
        if isinstance(finding, Mapping):
            findings.append(
                Reason(
                    agent=agent,
                    rule=str(finding.get("rule", "?")),
                    outcome=str(finding.get("outcome", "?")),
                    detail=str(finding.get("detail", "")),
                )
            )
    outcome = str(assessment["outcome"])
    if outcome != "pass" and not any(f["outcome"] == outcome for f in findings):
        findings.append(
            Reason(agent=agent, rule="answer", outcome=outcome, detail=f"{agent}: {outcome}")
        )
    return outcome, findings


def decide(application_id: str, assessments: Mapping[str, Any]) -> Decision:
    """Combine the consulted agents' answers: any decline declines, else any referral refers,
    else the application is approved. The reasons are the findings that carry the deciding
    outcome; `decided_by` names the agents that gave it."""
    outcomes: dict[str, str] = {}
    findings: dict[str, list[Reason]] = {}
    for agent in CONSULTED:
        outcomes[agent], findings[agent] = _outcome_of(agent, assessments.get(agent))
    worst = max(outcomes.values(), key=lambda o: _SEVERITY[o])
    decided_by = [agent for agent in CONSULTED if outcomes[agent] == worst]
    reasons = [r for agent in decided_by for r in findings[agent] if r["outcome"] == worst]
    decision = _DECISION[worst]
    if worst == "pass":
        summary = f"approved: {' and '.join(decided_by)} passed every rule"
    else:
        summary = f"{decision} by {' and '.join(decided_by)}: " + "; ".join(
            r["detail"] for r in reasons
        )
    return Decision(
        application_id=application_id,
        status="decided",
        decision=decision,
        decided_by=decided_by,
        reasons=reasons,
        summary=summary,
    )
