"""Golden decision tables: requests and the decisions a policy must give them.

`policies/tests/*.toml` hold `[[case]]` entries:

    [[case]]
    subject = "intake"
    object = "tool:loan.approve"
    action = "call"
    args = { amount = 60000, payee = "acct-1001" }   # optional, an inline table
    tainted = true                                    # optional: the run received untrusted
                                                      # content ([[taint]] rules apply)
    expect = "deny"                                   # allow | deny | approval_required
    rule = "constraints.toml:12"                      # optional: the deciding rule, in full or
                                                      # just its file:line
    note = "over the cap"                             # optional

A policy change that alters an answer fails its golden table, so every change of behaviour is
reviewed as a change of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ._decision import DecisionPoint
from ._errors import PolicyError, PolicyProblem, fail
from ._request import Decision, Request
from ._toml_entries import read_toml_entries, validate_entry


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    subject: str
    object: str
    action: str
    args: dict[str, Any] | None = None
    tainted: bool = False
    expect: Literal["allow", "deny", "approval_required"]
    rule: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class GoldenResult:
    """One case: where it is written, what it expects, and what decide() answered."""

    file: str
    line: int
    request: Request
    expect: str
    expect_rule: str | None
    note: str | None
    decision: Decision

    @property
    def ok(self) -> bool:
        rule = self.decision.rule
        return self.decision.effect == self.expect and (
            self.expect_rule is None or self.expect_rule in (rule, rule.split(" ", 1)[0])
        )

    def describe(self) -> str:
        r, d = self.request, self.decision
        tainted = " (tainted)" if r.tainted else ""
        head = f"{self.file}:{self.line}: {r.subject} {r.action} {r.object}{tainted}"
        if self.ok:
            return f"{head}: {d.effect} ({d.rule})"
        wanted = self.expect + (f" by {self.expect_rule}" if self.expect_rule else "")
        return f"{head}: expected {wanted}, got {d.effect} by {d.rule}: {d.reason}"


@dataclass(frozen=True)
class GoldenReport:
    """Every case of every table, with the policy version they ran against."""

    policy_version: str
    results: tuple[GoldenResult, ...]

    @property
    def failures(self) -> tuple[GoldenResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def ok(self) -> bool:
        return not self.failures

    def render(self) -> str:
        lines = [r.describe() for r in self.failures]
        lines.append(
            f"{len(self.results) - len(self.failures)} of {len(self.results)} golden "
            f"cases pass (policy {self.policy_version[:12]})"
        )
        return "\n".join(lines)


def run_golden_tables(directory: str | Path, point: DecisionPoint) -> GoldenReport:
    """Run every `*.toml` table in `directory` through `point.decide()`.

    Raises `PolicyError` (file:line: reason) for a malformed table or a directory without any.
    """
    tables = sorted(Path(directory).glob("*.toml"))
    if not tables:
        raise fail(str(directory), 0, "no golden tables (*.toml) found")
    version = point.version
    results: list[GoldenResult] = []
    problems: list[PolicyProblem] = []
    for path in tables:
        name = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(PolicyProblem(name, 0, f"cannot read: {exc}"))
            continue
        try:
            entries = read_toml_entries(name, text, ("case",))["case"]
        except PolicyError as exc:
            problems.extend(exc.located)
            continue
        if not entries:
            problems.append(PolicyProblem(name, 0, "no [[case]] entries"))
        for entry in entries:
            case = validate_entry(name, entry, _Case, problems)
            if case is None:
                continue
            request = Request(
                case.subject, case.object, case.action, case.args, tainted=case.tainted
            )
            decision = point.decide(request)
            if decision.policy_version != version:
                raise RuntimeError("the policy was reloaded while golden tables ran")
            results.append(
                GoldenResult(name, entry.line, request, case.expect, case.rule, case.note, decision)
            )
    if problems:
        raise PolicyError(problems)
    return GoldenReport(version, tuple(results))
