"""The loan-application example (agents/intake, underwriter, compliance).

The rules are tested as pure functions; the whole flow runs once in process (the asks answered
by the other agents' graphs, for speed) and once through a real daemon, router, inboxes and
worker processes, which is the path the in-process run stands in for.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness import REPO, DaemonProcess, decision_records, running_daemon, write_config

# Each agent's folder is its import root, as in its worker process (agentd.worker.load_graph).
for _agent in ("intake", "underwriter", "compliance"):
    if str(REPO / "agents" / _agent) not in sys.path:
        sys.path.insert(0, str(REPO / "agents" / _agent))

import compliance_graph  # noqa: E402
import compliance_rules  # noqa: E402
import intake_graph  # noqa: E402
import intake_rules  # noqa: E402
import underwriter_graph  # noqa: E402
import underwriting_rules  # noqa: E402

GOOD = {
    "application_id": "A-1001",
    "applicant": "Ada Lovelace",
    "amount": 12000,
    "income": 60000,
    "monthly_debt": 300,
    "term_months": 36,
}


def _validated(**changes: Any) -> intake_rules.Application:
    application, problems = intake_rules.validate_application(
        {**GOOD, **changes}, default_id="conv-1"
    )
    assert problems == [] and application is not None
    return application


# intake: validation


def test_validation_normalises_an_application() -> None:
    application, problems = intake_rules.validate_application(
        {"applicant": "  Ada \t Lovelace ", "amount": " 12000.456 ", "application_id": 4711},
        default_id="conv-1",
    )
    assert problems == []
    assert application == {
        "application_id": "4711",
        "applicant": "Ada Lovelace",
        "amount": 12000.46,
        "income": None,
        "monthly_debt": 0.0,
        "term_months": intake_rules.DEFAULT_TERM_MONTHS,
    }


def test_validation_uses_the_default_id_when_the_application_has_none() -> None:
    application, _ = intake_rules.validate_application(
        {"applicant": "Ada", "amount": 1}, default_id="conv-9"
    )
    assert application is not None and application["application_id"] == "conv-9"


def test_a_conversation_id_that_cannot_serve_as_an_application_id_is_named() -> None:
    application, problems = intake_rules.validate_application(
        {"applicant": "Ada", "amount": 1}, default_id="my loan"
    )
    assert application is None
    assert problems == [
        "application_id: required, as the conversation id 'my loan' cannot serve as one "
        "(1-64 letters, digits, '_', '.' or '-', starting with a letter or digit)"
    ]


@pytest.mark.parametrize(
    ("submitted", "expected"),
    [
        ([1, 2], ["the application must be a JSON object, got list"]),
        (None, ["the application must be a JSON object, got null"]),
        ({"amount": 5}, ["applicant: required"]),
        ({"applicant": "Ada"}, ["amount: required"]),
        ({"applicant": "Ada", "amount": True}, ["amount: must be a number, got True"]),
        ({"applicant": "Ada", "amount": "lots"}, ["amount: must be a number, got 'lots'"]),
        ({"applicant": "Ada", "amount": "nan"}, ["amount: must be a finite number"]),
        ({"applicant": "Ada", "amount": -5}, ["amount: must be from 0.01 to 10,000,000.00"]),
        ({"applicant": "Ada", "amount": 0.004}, ["amount: must be from 0.01"]),
        ({"applicant": "Ada", "amount": 2e7}, ["amount: must be from 0.01"]),
        ({"applicant": " ", "amount": 5}, ["applicant: must not be empty"]),
        ({"applicant": "Ada", "amount": 5, "income": -1}, ["income: must not be negative"]),
        ({"applicant": "Ada", "amount": 5, "term_months": 7.5}, ["term_months: must be a whole"]),
        ({"applicant": "Ada", "amount": 5, "term_months": 120}, ["term_months: must be a whole"]),
        ({"applicant": "Ada", "amount": 5, "application_id": "a b"}, ["application_id: must"]),
        ({"applicant": "Ada", "amout": 5}, ["amout: unknown field", "amount: required"]),
    ],
)
def test_validation_names_every_problem(submitted: Any, expected: list[str]) -> None:
    application, problems = intake_rules.validate_application(submitted, default_id="conv-1")
    assert application is None
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), (problem, start)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_field_values = st.fixed_dictionaries(
    {},
    optional={
        "application_id": st.integers(-5, 10**6) | st.text(max_size=70) | st.none(),
        "applicant": st.text(max_size=30) | st.none() | st.integers(),
        "amount": st.floats() | st.integers(-10, 10**8) | st.text(max_size=10),
        "income": st.floats() | st.integers(-10, 10**7) | st.none(),
        "monthly_debt": st.floats() | st.integers(-10, 10**5) | st.none(),
        "term_months": st.integers(0, 100) | st.floats(0, 100),
    },
)


@settings(max_examples=300, deadline=None)
@given(submitted=_json | _field_values)
def test_any_payload_is_either_valid_or_rejected_with_reasons(submitted: Any) -> None:
    application, problems = intake_rules.validate_application(submitted, default_id="conv-1")
    assert (application is None) == bool(problems)
    if application is not None:
        json.dumps(application, allow_nan=False)  # JSON-safe: no NaN, no infinity
        # what intake accepts, the underwriter can always compute with
        assessment = underwriting_rules.assess(application)
        assert all(f["rule"] != "input" for f in assessment["findings"])
        assert compliance_rules.review(application, assessment)["outcome"] in {
            "pass",
            "refer",
            "decline",
        }


# intake: combining the answers


def _answer(outcome: str, rule: str = "r") -> dict[str, Any]:
    return {"outcome": outcome, "findings": [{"rule": rule, "outcome": outcome, "detail": rule}]}


@pytest.mark.parametrize(
    ("underwriter", "compliance", "decision", "decided_by"),
    [
        ("pass", "pass", "approved", ["underwriter", "compliance"]),
        ("refer", "pass", "referred", ["underwriter"]),
        ("pass", "refer", "referred", ["compliance"]),
        ("refer", "decline", "declined", ["compliance"]),
        ("decline", "refer", "declined", ["underwriter"]),
        ("decline", "decline", "declined", ["underwriter", "compliance"]),
    ],
)
def test_the_worst_outcome_decides_and_names_who_gave_it(
    underwriter: str, compliance: str, decision: str, decided_by: list[str]
) -> None:
    result = intake_rules.decide(
        "A-1",
        {"underwriter": _answer(underwriter, "u"), "compliance": _answer(compliance, "c")},
    )
    assert result["status"] == "decided" and result["decision"] == decision
    assert result["decided_by"] == decided_by
    assert [r["agent"] for r in result["reasons"]] == decided_by
    assert all(
        r["outcome"] == (underwriter if r["agent"] == "underwriter" else compliance)
        for r in result["reasons"]
    )
    assert result["summary"].startswith(decision)


@pytest.mark.parametrize("bad", [None, "yes", {"outcome": "maybe"}, {"findings": []}])
def test_an_unusable_answer_is_referred_never_approved(bad: Any) -> None:
    result = intake_rules.decide("A-1", {"underwriter": bad, "compliance": _answer("pass")})
    assert result["decision"] == "referred" and result["decided_by"] == ["underwriter"]
    assert result["reasons"] == [
        {
            "agent": "underwriter",
            "rule": "answer",
            "outcome": "refer",
            "detail": "underwriter returned no usable assessment: a human must review",
        }
    ]


def test_a_referral_without_a_matching_finding_still_gives_a_reason() -> None:
    result = intake_rules.decide(
        "A-1", {"underwriter": {"outcome": "refer", "findings": []}, "compliance": _answer("pass")}
    )
    assert result["decision"] == "referred"
    assert [r["rule"] for r in result["reasons"]] == ["answer"]


# underwriter


def test_monthly_payment_is_the_annuity() -> None:
    assert underwriting_rules.monthly_payment(12000, 36) == 375.48
    assert underwriting_rules.monthly_payment(1200, 12, annual_rate=0.0) == 100.0
    # the annuity repays the principal: the present value of the payments is the amount
    rate = underwriting_rules.ANNUAL_RATE / 12
    payment = underwriting_rules.monthly_payment(30000, 60)
    present = sum(payment / (1 + rate) ** k for k in range(1, 61))
    assert math.isclose(present, 30000, rel_tol=1e-4)


@pytest.mark.parametrize(
    ("amount", "band"),
    [(10_000, "small"), (10_000.01, "medium"), (25_000, "medium"), (25_000.01, "large")],
)
def test_amount_bands(amount: float, band: str) -> None:
    assert underwriting_rules.amount_band(amount)[0] == band


@pytest.mark.parametrize(
    ("income", "outcome", "risk_band"),
    [
        (60_000, "pass", "low"),  # DTI 7.5 %
        (13_000, "pass", "medium"),  # DTI 34.7 %
        (10_000, "refer", "high"),  # DTI 45.1 %, + 10 for a medium amount
        (8_000, "decline", "high"),  # DTI 56.3 %
        (0, "decline", "high"),  # no income at all
    ],
)
def test_affordability_thresholds(income: float, outcome: str, risk_band: str) -> None:
    assessment = underwriting_rules.assess(_validated(income=income, monthly_debt=0))
    (affordability,) = [f for f in assessment["findings"] if f["rule"] == "affordability"]
    assert affordability["outcome"] == outcome
    assert assessment["outcome"] == outcome and assessment["risk_band"] == risk_band
    dti = assessment["metrics"]["debt_to_income"]
    if income:
        assert dti == round(375.48 / (income / 12), 4)
    else:
        assert dti is None and "unbounded" in affordability["detail"]


def test_without_income_the_underwriter_refers() -> None:
    assessment = underwriting_rules.assess(_validated(income=None))
    assert assessment["outcome"] == "refer"
    assert assessment["risk_score"] is None and assessment["risk_band"] == "unknown"
    assert assessment["findings"][0] == {
        "rule": "income_stated",
        "outcome": "refer",
        "detail": "no income stated: a person must assess affordability",
    }


def test_a_large_loan_needs_a_low_debt_to_income() -> None:
    low = underwriting_rules.assess(_validated(amount=40_000, income=200_000, term_months=60))
    high = underwriting_rules.assess(_validated(amount=40_000, income=45_000, term_months=60))
    assert low["outcome"] == "pass"
    band = [f for f in high["findings"] if f["rule"] == "amount_band"]
    assert band[0]["outcome"] == "refer" and "large loan of 40,000.00" in band[0]["detail"]
    assert high["outcome"] == "refer"


def test_the_underwriter_refers_input_it_cannot_compute_with() -> None:
    assessment = underwriting_rules.assess({"application_id": "x", "amount": "12000"})
    assert assessment["outcome"] == "refer"
    assert [f["rule"] for f in assessment["findings"]] == ["input", "input"]
    assert assessment["risk_score"] is None


# compliance


def _review(underwriting: dict[str, Any] | None = None, **changes: Any) -> dict[str, str]:
    review = compliance_rules.review(
        {**_validated(), **changes}, underwriting or {"risk_band": "low"}
    )
    return {f["rule"]: f["outcome"] for f in review["findings"]} | {"*": review["outcome"]}


def test_the_amount_cap_is_inclusive() -> None:
    assert _review(amount=50_000)["amount_cap"] == "pass"
    assert _review(amount=50_000.01) == {
        "required_fields": "pass",
        "amount_cap": "decline",
        "sanctions_screening": "pass",
        "enhanced_due_diligence": "pass",
        "*": "decline",
    }


@pytest.mark.parametrize(
    ("name", "hit"),
    [
        ("Boris Badenov", True),
        ("BADENOV, boris", True),
        ("Bóris  Badenov", True),
        ("Ernst Stavro Blofeld", True),
        ("Boris Badenova", False),
        ("Ernst Blofeld", False),
    ],
)
def test_sanctions_screening_folds_case_accents_and_order(name: str, hit: bool) -> None:
    outcome = _review(applicant=name)["sanctions_screening"]
    assert outcome == ("decline" if hit else "pass")


@pytest.mark.parametrize(
    ("amount", "risk_band", "outcome"),
    [
        (30_000, "high", "refer"),
        (30_000, "unknown", "refer"),
        (30_000, "medium", "pass"),
        (25_000, "high", "pass"),
    ],
)
def test_enhanced_due_diligence(amount: float, risk_band: str, outcome: str) -> None:
    assert _review({"risk_band": risk_band}, amount=amount)["enhanced_due_diligence"] == outcome


def test_compliance_without_underwriting_treats_the_risk_as_unknown() -> None:
    review = compliance_rules.review({**_validated(), "amount": 30_000}, None)
    assert review["outcome"] == "refer"


def test_compliance_refers_an_unidentified_application() -> None:
    review = compliance_rules.review({"amount": 100}, None)
    assert review["findings"][0]["rule"] == "required_fields"
    assert "application_id, applicant" in review["findings"][0]["detail"]
    assert review["outcome"] == "refer"


# the whole flow in process: asks answered by the other agents' graphs


class InProcessAgents:
    """Stands in for AgentContext: `ask` runs the asked agent's graph in this process."""

    def __init__(self, *, failing: str | None = None) -> None:
        self.run_id = "run-intake"
        self.conversation_id = "conv-1"
        self.asked: list[tuple[str, str | None, Any]] = []
        self._failing = failing
        self._graphs = {
            "underwriter": underwriter_graph.build(self),
            "compliance": compliance_graph.build(self),
        }

    async def ask(
        self, to: str, payload: Any, *, timeout_s: float = 30.0, conversation_id: str | None = None
    ) -> Any:
        self.asked.append((to, conversation_id, payload))
        if to == self._failing:
            raise TimeoutError(f"{to} did not answer within {timeout_s}s")
        return await self._graphs[to].ainvoke(payload)


@pytest.mark.anyio
async def test_the_flow_in_process_asks_both_agents_under_the_application_id() -> None:
    agents = InProcessAgents()
    result = await intake_graph.build(agents).ainvoke(dict(GOOD))
    assert result["decision"] == "approved" and result["application_id"] == "A-1001"
    assert [(to, conv) for to, conv, _ in agents.asked] == [
        ("underwriter", "A-1001"),
        ("compliance", "A-1001"),
    ]
    # compliance reviews with the underwriter's assessment in hand
    assert agents.asked[1][2]["underwriting"] == result["underwriter"]
    assert result["underwriter"]["risk_band"] == "low"


@pytest.mark.anyio
async def test_a_malformed_application_is_rejected_without_asking_anyone() -> None:
    agents = InProcessAgents()
    result = await intake_graph.build(agents).ainvoke(["not", "an", "object"])
    assert result["status"] == "rejected" and result["decision"] is None
    assert result["application_id"] is None and result["run_id"] == "run-intake"
    assert agents.asked == []


@pytest.mark.anyio
async def test_a_rejection_names_the_application_id_it_was_sent_with() -> None:
    agents = InProcessAgents()
    result = await intake_graph.build(agents).ainvoke({"application_id": 4711, "amount": 0})
    assert result["application_id"] == "4711" and result["status"] == "rejected"
    assert [r["detail"].split(":")[0] for r in result["reasons"]] == ["applicant", "amount"]
    assert agents.asked == []


@pytest.mark.anyio
async def test_an_agent_that_does_not_answer_fails_the_run_instead_of_deciding() -> None:
    agents = InProcessAgents(failing="compliance")
    with pytest.raises(TimeoutError, match="compliance did not answer"):
        await intake_graph.build(agents).ainvoke(dict(GOOD))


# the whole flow through a real daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    config = write_config(
        tmp_path_factory.mktemp("loan"),
        enabled=["echo", "intake", "underwriter", "compliance"],
        policy="enforce",
    )
    with running_daemon(config) as d:
        yield d
        assert d.stop() == 0


def _apply(daemon: DaemonProcess, application: Any, *options: str) -> dict[str, Any]:
    out = daemon.agentctl("send", "intake", json.dumps(application), "--wait", *options)
    assert out.returncode == 0, f"{out.stderr}\n{daemon.log()}"
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _routed(daemon: DaemonProcess, *, at_least: int) -> list[dict[str, Any]]:
    """The router's `message.routed` decisions, as {from, to, conversation_id}; the recorder
    writes in batches, so wait briefly for the expected number."""
    deadline = time.monotonic() + 5
    while True:
        records = decision_records(daemon.dir / "state", "message.routed")
        routed = [{**r["inputs"], "conversation_id": r["conversation_id"]} for r in records]
        if len(routed) >= at_least or time.monotonic() > deadline:
            return routed
        time.sleep(0.05)


DECISION_KEYS = {
    "application_id",
    "status",
    "decision",
    "decided_by",
    "reasons",
    "summary",
    "application",
    "underwriter",
    "compliance",
    "run_id",
}


@pytest.mark.integration
def test_loan_flow_through_the_daemon(daemon: DaemonProcess) -> None:
    approved = _apply(daemon, GOOD)
    assert set(approved) == DECISION_KEYS
    assert approved["application_id"] == "A-1001" and approved["status"] == "decided"
    assert approved["decision"] == "approved"
    assert approved["decided_by"] == ["underwriter", "compliance"]
    assert approved["application"] == {
        **GOOD,
        "amount": 12000.0,
        "income": 60000.0,
        "monthly_debt": 300.0,
    }
    assert approved["underwriter"]["outcome"] == "pass"
    assert approved["underwriter"]["metrics"]["monthly_payment"] == 375.48
    assert approved["compliance"]["outcome"] == "pass"
    assert [(r["agent"], r["rule"]) for r in approved["reasons"]] == [
        ("underwriter", "income_stated"),
        ("underwriter", "affordability"),
        ("underwriter", "amount_band"),
        ("compliance", "required_fields"),
        ("compliance", "amount_cap"),
        ("compliance", "sanctions_screening"),
        ("compliance", "enhanced_due_diligence"),
    ]
    # three runs in three processes: each names its own run
    runs = {approved["run_id"], approved["underwriter"]["run_id"], approved["compliance"]["run_id"]}
    assert len(runs) == 3 and all(isinstance(r, str) and len(r) == 32 for r in runs)

    # the auditor's case: application 4711, sent under its own conversation id
    declined = _apply(
        daemon,
        {"application_id": 4711, "applicant": "Grace Hopper", "amount": 60000, "income": 250000},
        "--conversation",
        "4711",
    )
    assert declined["application_id"] == "4711" and declined["decision"] == "declined"
    assert declined["decided_by"] == ["compliance"]
    assert declined["reasons"] == [
        {
            "agent": "compliance",
            "rule": "amount_cap",
            "outcome": "decline",
            "detail": "amount 60,000.00 exceeds the product cap of 50,000.00",
        }
    ]
    assert declined["summary"] == (
        "declined by compliance: amount 60,000.00 exceeds the product cap of 50,000.00"
    )
    assert declined["underwriter"]["outcome"] == "pass"  # the underwriter alone would lend

    # the operator's journey: no income stated, no id (the conversation id becomes the id)
    referred = _apply(
        daemon, {"applicant": "Alan Turing", "amount": 12000}, "--conversation", "L-7"
    )
    assert referred["application_id"] == "L-7" and referred["decision"] == "referred"
    assert referred["decided_by"] == ["underwriter"]
    assert [r["rule"] for r in referred["reasons"]] == ["income_stated"]
    assert referred["compliance"]["outcome"] == "pass"

    malformed = _apply(daemon, {"applicant": "", "amount": "lots", "colour": "red"})
    known = ", ".join(intake_rules.APPLICATION_FIELDS)
    assert malformed == {
        "application_id": None,
        "status": "rejected",
        "decision": None,
        "decided_by": ["intake"],
        "reasons": [
            {
                "agent": "intake",
                "rule": "validation",
                "outcome": "reject",
                "detail": f"colour: unknown field (known: {known})",
            },
            {
                "agent": "intake",
                "rule": "validation",
                "outcome": "reject",
                "detail": "applicant: must not be empty",
            },
            {
                "agent": "intake",
                "rule": "validation",
                "outcome": "reject",
                "detail": "amount: must be a number, got 'lots'",
            },
        ],
        "summary": "rejected by intake: 3 problem(s) with the application; "
        "fix them and submit again",
        "application": None,
        "underwriter": None,
        "compliance": None,
        "run_id": malformed["run_id"],
    }

    # the router's journal: each application's asks travel under its id, one of each, and the
    # malformed application reached nobody
    routed = _routed(daemon, at_least=10)
    from_intake = [r for r in routed if r["from"] == "intake"]
    assert len(from_intake) == 6
    for application_id in ("A-1001", "4711", "L-7"):
        asks = sorted(r["to"] for r in from_intake if r["conversation_id"] == application_id)
        assert asks == ["compliance", "underwriter"], (application_id, from_intake)
    to_intake = {r["conversation_id"] for r in routed if r["to"] == "intake"}
    assert {"4711", "L-7"} <= to_intake  # the operator's conversation is the application's
