"""The underwriter's rules: a deterministic credit-risk assessment of one application.

Pure functions over JSON values: no NATS, no LangGraph. An LLM node will later draft the
assessment; these rules stay as the deterministic baseline it is checked against.

Rules (each gives a finding with outcome pass | refer | decline):
- income_stated: without a stated income affordability cannot be assessed: refer.
- affordability: debt-to-income = (existing monthly debt + this loan's monthly payment) /
  monthly income; up to 36 % passes, up to 50 % is referred, above 50 % is declined.
- amount_band: loans above 25,000 ("large") pass only with a debt-to-income of at most 25 %;
  otherwise they are referred.
The overall outcome is the worst finding. The risk score (0-100, higher is riskier) summarises
debt-to-income and the amount band for compliance and for people reading the decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

__all__ = [
    "ANNUAL_RATE",
    "RULES_VERSION",
    "Assessment",
    "Finding",
    "amount_band",
    "assess",
    "monthly_payment",
]

RULES_VERSION = "underwriting-2026.1"
ANNUAL_RATE = 0.079  # the product's fixed nominal rate
DTI_PASS_MAX = 0.36
DTI_REFER_MAX = 0.50
LARGE_LOAN_DTI_MAX = 0.25
# (upper bound of the band, its name, its risk points)
AMOUNT_BANDS: tuple[tuple[float, str, int], ...] = (
    (10_000.0, "small", 0),
    (25_000.0, "medium", 10),
    (math.inf, "large", 20),
)
RISK_BANDS: tuple[tuple[int, str], ...] = ((30, "low"), (50, "medium"), (101, "high"))
_SEVERITY = {"pass": 0, "refer": 1, "decline": 2}


class Finding(TypedDict):
    rule: str
    outcome: str  # pass | refer | decline
    detail: str


class Metrics(TypedDict):
    monthly_payment: float | None
    debt_to_income: float | None
    amount_band: str | None
    annual_rate: float


class Assessment(TypedDict):
    """What the underwriter answers: its outcome, the numbers behind it, and why."""

    application_id: str | None
    agent: str
    outcome: str  # pass | refer | decline
    risk_score: int | None
    risk_band: str  # low | medium | high | unknown
    metrics: Metrics
    findings: list[Finding]
    rules_version: str


def monthly_payment(amount: float, term_months: int, annual_rate: float = ANNUAL_RATE) -> float:
    """The annuity payment that repays `amount` over `term_months` at `annual_rate`."""
    rate = annual_rate / 12
    if rate == 0:
        return round(amount / term_months, 2)
    return round(amount * rate / (1 - (1 + rate) ** -term_months), 2)


def amount_band(amount: float) -> tuple[str, int]:
    """The amount band's name and its risk points."""
    for upper, name, points in AMOUNT_BANDS:
        if amount <= upper:
            return name, points
    raise AssertionError("unreachable: the last band is unbounded")


def _risk_band(score: int) -> str:
    for upper, name in RISK_BANDS:
        if score < upper:
            return name
    return "high"


def _input_problems(application: Mapping[str, Any]) -> list[str]:
    """The underwriter answers whoever asks it, so it checks the fields it computes with."""

    def number(key: str) -> bool:
        value = application.get(key)
        return isinstance(value, int | float) and not isinstance(value, bool)

    problems = []
    if not number("amount") or application["amount"] <= 0:
        problems.append("amount: must be a positive number")
    term = application.get("term_months")
    if not isinstance(term, int) or isinstance(term, bool) or term <= 0:
        problems.append("term_months: must be a positive whole number")
    if application.get("income") is not None and (
        not number("income") or application["income"] < 0
    ):
        problems.append("income: must be a number of at least 0, or absent")
    if application.get("monthly_debt") is not None and (
        not number("monthly_debt") or application["monthly_debt"] < 0
    ):
        problems.append("monthly_debt: must be a number of at least 0, or absent")
    return problems


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def assess(application: Mapping[str, Any]) -> Assessment:
    """Assess one application (the normalised form intake sends)."""
    application_id = application.get("application_id")
    app_id = str(application_id) if application_id is not None else None
    problems = _input_problems(application)
    if problems:
        return Assessment(
            application_id=app_id,
            agent="underwriter",
            outcome="refer",
            risk_score=None,
            risk_band="unknown",
            metrics=Metrics(
                monthly_payment=None,
                debt_to_income=None,
                amount_band=None,
                annual_rate=ANNUAL_RATE,
            ),
            findings=[
                Finding(rule="input", outcome="refer", detail=f"cannot assess: {p}")
                for p in problems
            ],
            rules_version=RULES_VERSION,
        )

    amount = float(application["amount"])
    term = int(application["term_months"])
    income = application.get("income")
    debt = float(application.get("monthly_debt") or 0.0)
    payment = monthly_payment(amount, term)
    band, band_points = amount_band(amount)
    findings: list[Finding] = []
    dti: float | None = None

    if income is None:
        findings.append(
            Finding(
                rule="income_stated",
                outcome="refer",
                detail="no income stated: a person must assess affordability",
            )
        )
    else:
        findings.append(Finding(rule="income_stated", outcome="pass", detail="income stated"))
        monthly_income = float(income) / 12
        dti = (debt + payment) / monthly_income if monthly_income > 0 else math.inf
        basis = (
            f"debt-to-income {_pct(dti) if math.isfinite(dti) else 'unbounded (no income)'} "
            f"(monthly payment {payment:,.2f} + existing debt {debt:,.2f})"
        )
        if dti <= DTI_PASS_MAX:
            findings.append(
                Finding(
                    rule="affordability",
                    outcome="pass",
                    detail=f"{basis} is within {_pct(DTI_PASS_MAX)}",
                )
            )
        elif dti <= DTI_REFER_MAX:
            findings.append(
                Finding(
                    rule="affordability",
                    outcome="refer",
                    detail=f"{basis} is above {_pct(DTI_PASS_MAX)}: a person must review",
                )
            )
        else:
            findings.append(
                Finding(
                    rule="affordability",
                    outcome="decline",
                    detail=f"{basis} is above the limit of {_pct(DTI_REFER_MAX)}",
                )
            )

    if band != "large":
        findings.append(
            Finding(rule="amount_band", outcome="pass", detail=f"{amount:,.2f} is a {band} loan")
        )
    elif dti is not None and dti <= LARGE_LOAN_DTI_MAX:
        findings.append(
            Finding(
                rule="amount_band",
                outcome="pass",
                detail=f"large loan of {amount:,.2f} with debt-to-income within "
                f"{_pct(LARGE_LOAN_DTI_MAX)}",
            )
        )
    else:
        findings.append(
            Finding(
                rule="amount_band",
                outcome="refer",
                detail=f"large loan of {amount:,.2f} needs debt-to-income within "
                f"{_pct(LARGE_LOAN_DTI_MAX)}: a person must review",
            )
        )

    score: int | None = None
    if dti is not None:
        score = min(100, round(min(dti, 1.0) * 100) + band_points)
    outcome = max((f["outcome"] for f in findings), key=lambda o: _SEVERITY[o])
    return Assessment(
        application_id=app_id,
        agent="underwriter",
        outcome=outcome,
        risk_score=score,
        risk_band=_risk_band(score) if score is not None else "unknown",
        metrics=Metrics(
            monthly_payment=payment,
            debt_to_income=round(dti, 4) if dti is not None and math.isfinite(dti) else None,
            amount_band=band,
            annual_rate=ANNUAL_RATE,
        ),
        findings=findings,
        rules_version=RULES_VERSION,
    )
