"""Compliance's rules: the checks an application must pass whatever its credit risk.

Pure functions over JSON values: no NATS, no LangGraph. Rules (each gives a finding with
outcome pass | refer | decline):
- required_fields: application_id, applicant and amount must be present, else refer (compliance
  does not review what it cannot identify).
- amount_cap: the product lends at most 50,000: above it, decline.
- sanctions_screening: an applicant whose name matches the sanctions list is declined. Names are
  compared after folding case, accents, punctuation and word order.
- enhanced_due_diligence: a loan above 25,000 whose underwriting risk is high, or unknown, is
  referred for enhanced due diligence.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

__all__ = [
    "AMOUNT_CAP",
    "RULES_VERSION",
    "SANCTIONED_NAMES",
    "Finding",
    "Review",
    "name_key",
    "review",
]

RULES_VERSION = "compliance-2026.1"
AMOUNT_CAP = 50_000.0
EDD_AMOUNT = 25_000.0
EDD_RISK_BANDS = frozenset({"high", "unknown"})
# A fictional list for the example; a deployment would screen through a tool against the
# official lists, with the list's version in the finding.
SANCTIONED_NAMES: tuple[str, ...] = (
    "Boris Badenov",
    "Natasha Fatale",
    "Ernst Stavro Blofeld",
    "Carmen Sandiego",
)
REQUIRED_FIELDS = ("application_id", "applicant", "amount")
_SEVERITY = {"pass": 0, "refer": 1, "decline": 2}


class Finding(TypedDict):
    rule: str
    outcome: str  # pass | refer | decline
    detail: str


class Review(TypedDict):
    """What compliance answers: its outcome and every check it made."""

    application_id: str | None
    agent: str
    outcome: str  # pass | refer | decline
    findings: list[Finding]
    rules_version: str


def name_key(name: str) -> frozenset[str]:
    """A name reduced for matching: no accents, case, punctuation or word order."""
    decomposed = unicodedata.normalize("NFKD", name)
    letters = "".join(c if c.isalnum() else " " for c in decomposed if not unicodedata.combining(c))
    return frozenset(letters.casefold().split())


def _sanctioned(names: Iterable[str]) -> dict[frozenset[str], str]:
    return {name_key(name): name for name in names}


_SANCTIONED = _sanctioned(SANCTIONED_NAMES)


def review(application: Mapping[str, Any], underwriting: Mapping[str, Any] | None) -> Review:
    """Review one application, given the underwriter's assessment of it (None if absent)."""
    application_id = application.get("application_id")
    findings: list[Finding] = []

    missing = [f for f in REQUIRED_FIELDS if application.get(f) in (None, "")]
    if missing:
        findings.append(
            Finding(
                rule="required_fields",
                outcome="refer",
                detail=f"missing {', '.join(missing)}: cannot review an unidentified application",
            )
        )
    else:
        findings.append(
            Finding(rule="required_fields", outcome="pass", detail="required fields present")
        )

    amount = application.get("amount")
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        if amount > AMOUNT_CAP:
            findings.append(
                Finding(
                    rule="amount_cap",
                    outcome="decline",
                    detail=f"amount {amount:,.2f} exceeds the product cap of {AMOUNT_CAP:,.2f}",
                )
            )
        else:
            findings.append(
                Finding(
                    rule="amount_cap",
                    outcome="pass",
                    detail=f"amount {amount:,.2f} is within the cap of {AMOUNT_CAP:,.2f}",
                )
            )
    elif amount is not None:
        findings.append(
            Finding(
                rule="amount_cap", outcome="refer", detail=f"amount is not a number: {amount!r}"
            )
        )

    applicant = application.get("applicant")
    if isinstance(applicant, str) and applicant.strip():
        match = _SANCTIONED.get(name_key(applicant))
        if match is not None:
            findings.append(
                Finding(
                    rule="sanctions_screening",
                    outcome="decline",
                    detail=f"applicant {applicant!r} matches sanctions list entry {match!r}",
                )
            )
        else:
            findings.append(
                Finding(
                    rule="sanctions_screening",
                    outcome="pass",
                    detail="applicant not on the sanctions list",
                )
            )

    band = "unknown"
    if isinstance(underwriting, Mapping) and isinstance(underwriting.get("risk_band"), str):
        band = underwriting["risk_band"]
    if isinstance(amount, int | float) and amount > EDD_AMOUNT and band in EDD_RISK_BANDS:
        findings.append(
            Finding(
                rule="enhanced_due_diligence",
                outcome="refer",
                detail=f"amount above {EDD_AMOUNT:,.2f} with {band} underwriting risk: "
                "needs enhanced due diligence",
            )
        )
    else:
        why = (
            f"underwriting risk {band}"
            if isinstance(amount, int | float) and amount > EDD_AMOUNT
            else f"amount at most {EDD_AMOUNT:,.2f}"
        )
        findings.append(
            Finding(rule="enhanced_due_diligence", outcome="pass", detail=f"not required: {why}")
        )

    outcome = max((f["outcome"] for f in findings), key=lambda o: _SEVERITY[o])
    return Review(
        application_id=str(application_id) if application_id is not None else None,
        agent="compliance",
        outcome=outcome,
        findings=findings,
        rules_version=RULES_VERSION,
    )
