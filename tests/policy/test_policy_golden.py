"""Golden decision tables, explain(), and the `python -m agentd.policy` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import casbin  # type: ignore[import-untyped]
import pytest

from agentd.policy import DecisionPoint, PolicyError, Request, run_golden_tables

from .policy_gen import EXAMPLES

ROOT = EXAMPLES.parent


def test_example_golden_tables_pass() -> None:
    point = DecisionPoint.from_dir(EXAMPLES)
    report = run_golden_tables(EXAMPLES / "tests", point)
    assert report.ok, report.render()
    assert len(report.results) >= 60
    effects = {r.decision.effect for r in report.results}
    assert effects == {"allow", "deny", "approval_required"}
    files = {r.file for r in report.results}
    assert {"loan_flow.toml", "operators.toml", "wildcards.toml"} <= files


def test_golden_access_answers_agree_with_raw_casbin() -> None:
    point = DecisionPoint.from_dir(EXAMPLES)
    raw = casbin.Enforcer(str(EXAMPLES / "model.conf"), str(EXAMPLES / "policy.csv"))
    snapshot = point.policy.casbin_enforcer()  # built from the loaded snapshot's text
    report = run_golden_tables(EXAMPLES / "tests", point)
    for result in report.results:
        r = result.request
        access_allowed = result.decision.stage in ("constraint", "taint", "approval") or (
            result.decision.effect == "allow"
        )
        assert raw.enforce(r.subject, r.object, r.action) == access_allowed, result.describe()
        assert snapshot.enforce(r.subject, r.object, r.action) == access_allowed


def test_a_wrong_expectation_fails_with_file_and_line(policy_dir: Path) -> None:
    table = policy_dir / "tests" / "operators.toml"
    text = table.read_text()
    text = text.replace(
        'expect = "allow"\nrule = "policy.csv:48"', 'expect = "deny"\nrule = "policy.csv:48"', 1
    )
    table.write_text(text)
    report = run_golden_tables(policy_dir / "tests", DecisionPoint.from_dir(policy_dir))
    assert not report.ok
    [failure] = report.failures
    assert failure.file == "operators.toml" and failure.line == 3
    assert "expected deny by policy.csv:48, got allow by policy.csv:48" in failure.describe()


def test_a_wrong_rule_fails(policy_dir: Path) -> None:
    table = policy_dir / "tests" / "operators.toml"
    table.write_text(
        table.read_text().replace('rule = "policy.csv:48"', 'rule = "policy.csv:49"', 1)
    )
    report = run_golden_tables(policy_dir / "tests", DecisionPoint.from_dir(policy_dir))
    assert [f.line for f in report.failures] == [3]


def test_a_malformed_golden_table_is_rejected_with_line(policy_dir: Path) -> None:
    (policy_dir / "tests" / "bad.toml").write_text(
        '[[case]]\nsubject = "intake"\nobject = "tool:x"\naction = "call"\nexpect = "maybe"\n'
    )
    with pytest.raises(PolicyError) as caught:
        run_golden_tables(policy_dir / "tests", DecisionPoint.from_dir(policy_dir))
    assert any(p.startswith("bad.toml:5: expect") for p in caught.value.problems)


def test_explain_names_roles_rules_and_checks() -> None:
    point = DecisionPoint.from_dir(EXAMPLES)
    args = {"applicant_id": "A-1001", "amount": 60000, "payee": "acct-1001"}
    explanation = point.explain("underwriter", "tool:loan.approve", "call", args)
    assert explanation.decision == point.decide(
        Request("underwriter", "tool:loan.approve", "call", args)
    )
    assert explanation.decision.rule == "constraints.toml:11 [loan.approve].amount <= 50000"
    assert [t.text for t in explanation.acts_as] == ["underwriter", "role:loan-agent", "role:agent"]
    assert [t.rule for t in explanation.access] == ["policy.csv:39"]
    failing = [t for t in explanation.constraints if t.outcome != "passes"]
    assert [t.rule.split()[0] for t in failing] == ["constraints.toml:11"]
    assert "exceeds the maximum 50000" in failing[0].outcome
    text = explanation.render()
    assert "DENY by constraints.toml:11" in text and "policy.csv:13" in text


def test_explain_shows_the_deny_that_beats_an_allow() -> None:
    point = DecisionPoint.from_dir(EXAMPLES)
    explanation = point.explain("operator:dave", "ctl:policy.reload", "policy.reload")
    assert [(t.rule, t.outcome) for t in explanation.access] == [
        ("policy.csv:55", "allow (as role:admin)"),
        ("policy.csv:57", "deny"),
    ]
    assert explanation.decision.rule == "policy.csv:57"


def test_explain_default_deny() -> None:
    explanation = DecisionPoint.from_dir(EXAMPLES).explain("nobody", "tool:x", "call")
    assert [t.rule for t in explanation.access] == ["model.conf:15"]
    assert explanation.decision.effect == "deny"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentd.policy", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_cli_check_and_explain(policy_dir: Path) -> None:
    ok = _cli("check", str(EXAMPLES))
    assert ok.returncode == 0, ok.stderr
    assert "golden cases pass" in ok.stdout
    explained = _cli(
        "explain",
        str(EXAMPLES),
        "intake",
        "tool:http.fetch",
        "call",
        '{"url": "https://evil.example/"}',
    )
    assert explained.returncode == 0
    assert "DENY by constraints.toml:38" in explained.stdout
    (policy_dir / "policy.csv").write_text("p, a, b\n")
    broken = _cli("check", str(policy_dir))
    assert broken.returncode == 1
    assert "policy.csv:1: a `p` line has 4 fields" in broken.stderr
