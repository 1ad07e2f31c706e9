"""Approval binding: an approval covers one exact call, under one policy version, until expiry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentd.policy import ApprovalBinding, DecisionPoint, Request, args_digest, canonical_args

ARGS = {"applicant_id": "A-1001", "amount": 20000, "payee": "acct-1001"}
REQUEST = Request("underwriter", "tool:loan.approve", "call", ARGS)
NOW = 1_800_000_000.0


@pytest.fixture
def approved(policy_dir: Path) -> tuple[DecisionPoint, ApprovalBinding]:
    point = DecisionPoint.from_dir(policy_dir)
    decision = point.decide(REQUEST)
    assert decision.effect == "approval_required"
    assert decision.rule == "constraints.toml:53 [loan.approve].amount > 10000"
    return point, ApprovalBinding.for_request(REQUEST, decision, ttl_s=300, now=NOW)


def test_the_same_call_matches(approved: tuple[DecisionPoint, ApprovalBinding]) -> None:
    point, binding = approved
    same = Request(
        "underwriter",
        "tool:loan.approve",
        "call",
        {"payee": "acct-1001", "amount": 20000, "applicant_id": "A-1001"},
    )
    assert binding.matches(same, policy_version=point.version, now=NOW + 299)
    assert binding.rule.startswith("constraints.toml:53")


@pytest.mark.parametrize(
    "changed",
    [
        {"amount": 20001},
        {"amount": 20000.0},
        {"amount": "20000"},
        {"payee": "acct-2002"},
        {"applicant_id": "A-1002"},
        {"memo": "and one more thing"},
    ],
)
def test_arguments_changed_after_approval_do_not_match(
    approved: tuple[DecisionPoint, ApprovalBinding], changed: dict[str, object]
) -> None:
    point, binding = approved
    request = Request(REQUEST.subject, REQUEST.object, REQUEST.action, {**ARGS, **changed})
    assert binding.mismatch(request, policy_version=point.version, now=NOW) == (
        "the arguments differ from the approved ones"
    )


def test_an_expired_approval_does_not_match(
    approved: tuple[DecisionPoint, ApprovalBinding],
) -> None:
    point, binding = approved
    assert not binding.matches(REQUEST, policy_version=point.version, now=NOW + 300)
    reason = binding.mismatch(REQUEST, policy_version=point.version, now=NOW + 301)
    assert reason is not None and "expired" in reason


def test_a_policy_change_voids_the_approval(
    approved: tuple[DecisionPoint, ApprovalBinding], policy_dir: Path
) -> None:
    point, binding = approved
    with (policy_dir / "policy.csv").open("a") as f:
        f.write("p, intake, tool:noop, call, allow\n")
    point.reload()
    assert binding.mismatch(REQUEST, policy_version=point.version, now=NOW) == (
        "the policy changed since the approval"
    )


def test_another_caller_or_tool_does_not_match(
    approved: tuple[DecisionPoint, ApprovalBinding],
) -> None:
    point, binding = approved
    for request in (
        Request("intake", REQUEST.object, "call", ARGS),
        Request(REQUEST.subject, "tool:loan.refund", "call", ARGS),
        Request(REQUEST.subject, REQUEST.object, "execute", ARGS),
    ):
        assert not binding.matches(request, policy_version=point.version, now=NOW)


def test_binding_round_trips_through_json(approved: tuple[DecisionPoint, ApprovalBinding]) -> None:
    point, binding = approved
    restored = ApprovalBinding.from_dict(json.loads(json.dumps(binding.to_dict())))
    assert restored == binding
    assert restored.matches(REQUEST, policy_version=point.version, now=NOW)


def test_only_an_approval_required_decision_can_be_bound(policy_dir: Path) -> None:
    point = DecisionPoint.from_dir(policy_dir)
    small = Request(REQUEST.subject, REQUEST.object, "call", {**ARGS, "amount": 500})
    with pytest.raises(ValueError, match="not 'approval_required'"):
        ApprovalBinding.for_request(small, point.decide(small), ttl_s=60)
    with pytest.raises(ValueError, match="ttl_s"):
        ApprovalBinding.for_request(REQUEST, point.decide(REQUEST), ttl_s=0)


def test_canonical_arguments() -> None:
    assert canonical_args({"b": [1, {"d": 2, "c": "é"}], "a": None}) == (
        '{"a":null,"b":[1,{"c":"é","d":2}]}'
    )
    assert canonical_args(None) == canonical_args({}) == "{}"
    assert args_digest({"x": 1, "y": 2}) == args_digest({"y": 2, "x": 1})
    assert args_digest({"x": 1}) != args_digest({"x": 1.0})
    with pytest.raises(ValueError, match="canonical JSON"):
        canonical_args({"x": float("inf")})
    with pytest.raises(ValueError, match="canonical JSON"):
        canonical_args({"x": {1, 2}})
