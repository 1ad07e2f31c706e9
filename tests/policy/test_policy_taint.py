"""`[[taint]]` rules: parsed with file:line for every mistake, applied only to tainted requests,
after access rules and argument constraints and before approval rules, and reloaded like the
rest of the policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentd.policy import DecisionPoint, PolicyError, Request, load_policy

ARGS = {"applicant_id": "A-1001", "amount": 5000, "payee": "acct-1001"}


def _append(policy_dir: Path, text: str) -> int:
    """Append `text` to constraints.toml; the line number its first line lands on."""
    path = policy_dir / "constraints.toml"
    before = path.read_text()
    path.write_text(before + text)
    return len(before.splitlines()) + 1


def _problems(policy_dir: Path) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    return list(caught.value.problems)


@pytest.mark.parametrize(
    ("text", "offset", "reason"),
    [
        ('[[taint]]\ntool = "loan.approve"\neffect = "block"\n', 2, "effect"),
        ('[[taint]]\ntool = "loan.approve"\n', 0, "[[taint]] needs 'effect'"),
        ('[[taint]]\neffect = "deny"\n', 0, "[[taint]] needs 'tool'"),
        ('[[taint]]\ntool = "loan.*"\neffect = "deny"\n', 1, "is not a tool name"),
        ('[[taint]]\ntool = "sql.query"\neffect = "deny"\nwhen = "always"\n', 3, "unknown field"),
        ('[[taint]]\ntool = "sql.query"\neffect = true\n', 2, "effect"),
    ],
    ids=["bad-effect", "no-effect", "no-tool", "wildcard", "unknown-key", "not-a-string"],
)
def test_a_malformed_taint_rule_is_refused_with_its_line(
    policy_dir: Path, text: str, offset: int, reason: str
) -> None:
    start = _append(policy_dir, "\n" + text) + 1  # after the blank line
    problems = _problems(policy_dir)
    where = f"constraints.toml:{start + offset}:"
    assert any(p.startswith(where) and reason in p for p in problems), problems


def test_two_rules_for_one_tool_are_refused_naming_both_lines(policy_dir: Path) -> None:
    start = _append(policy_dir, '\n[[taint]]\ntool = "loan.approve"\neffect = "approve"\n') + 1
    problems = _problems(policy_dir)
    first = next(
        n
        for n, line in enumerate((policy_dir / "constraints.toml").read_text().splitlines(), 1)
        if line == 'effect = "deny"'
    )
    assert any(
        p.startswith(f"constraints.toml:{start + 1}:") and f"(line {first}: its effect)" in p
        for p in problems
    ), problems


def test_the_rule_applies_only_to_tainted_requests(policy_dir: Path) -> None:
    point = DecisionPoint.from_dir(policy_dir)
    clean = point.decide(Request("underwriter", "tool:loan.approve", "call", ARGS))
    tainted = point.decide(Request("underwriter", "tool:loan.approve", "call", ARGS, tainted=True))
    assert clean.effect == "allow"
    assert tainted.effect == "deny"
    assert tainted.stage == "taint"
    assert tainted.rule.startswith("constraints.toml:") and "tainted deny" in tainted.rule
    assert "untrusted content" in tainted.reason
    # the cache keeps the two apart, in either order
    assert point.decide(Request("underwriter", "tool:loan.approve", "call", ARGS)).allowed


def test_a_reload_turns_deny_into_approval(policy_dir: Path) -> None:
    point = DecisionPoint.from_dir(policy_dir)
    request = Request("underwriter", "tool:loan.approve", "call", ARGS, tainted=True)
    assert point.decide(request).effect == "deny"
    path = policy_dir / "constraints.toml"
    path.write_text(path.read_text().replace('effect = "deny"', 'effect = "approve"'))
    point.reload()
    decision = point.decide(request)
    assert decision.effect == "approval_required"
    assert decision.rule.endswith("[loan.approve] tainted approve")


def test_explain_names_the_taint_rule(policy_dir: Path) -> None:
    point = DecisionPoint.from_dir(policy_dir)
    text = point.explain("underwriter", "tool:loan.approve", "call", ARGS, tainted=True).render()
    assert "(tainted run)" in text
    assert "taint rule:" in text and "-> applies" in text
    clean = point.explain("underwriter", "tool:loan.approve", "call", ARGS).render()
    assert "not tainted: does not apply" in clean
