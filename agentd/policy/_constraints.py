"""constraints.toml: argument constraints and approval rules for tool calls.

Declarative only: each `[[constraint]]` names a tool, an argument and one or more checks; each
`[[approval]]` names a tool and a condition under which a call needs a human's approval. Nothing
is evaluated as code. Checks (a constraint passes only if all its checks pass):

    required = true       the argument must be present
    min = N / max = N     a number (not a bool, finite) with N <= value / value <= N
    one_of = [..]         equal to one of the listed values, of the same JSON type
    host_in = [..]        an http(s) URL, without user info, whose host is one of the listed hosts
    regex = "..."         a string the pattern matches in full (re.fullmatch)
    not_regex = "..."     a string in which the pattern matches nowhere (re.search)
    max_length = N        a string or list of at most N items

A check other than `required` passes when the argument is absent: write `required = true` where
absence must be denied. `arg` may be a dotted path into nested objects (`payee.account`).

Approval conditions (`[[approval]]`, the first that holds decides):

    above = N / below = N   unless the value is a number <= N / >= N (a missing or non-numeric
                            value needs approval: when in doubt, ask a human)
    one_of = [..]           the value equals one of the listed values
    always = true           every call

Taint rules (`[[taint]]`, tool + effect = "deny" | "approve", one per tool) decide what a call
from a run tainted by untrusted content gets; see `_taint_rules.py`.

Rule names are `constraints.toml:LINE [tool].arg CHECK`, LINE being the line of the check's key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from ._checks import CHECKS, MISSING, describe, is_number, lookup, same_value
from ._errors import PolicyError, PolicyProblem
from ._taint_rules import TaintRule, parse_taint_rules
from ._toml_entries import TomlEntry, read_toml_entries, validate_entry

Scalar = str | int | float | bool

_TOOL = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_ARG = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


class _ConstraintEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    tool: str
    arg: str
    required: bool | None = None
    min: int | float | None = None
    max: int | float | None = None
    one_of: list[Scalar] | None = None
    host_in: list[str] | None = None
    regex: str | None = None
    not_regex: str | None = None
    max_length: int | None = None


class _ApprovalEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    tool: str
    arg: str | None = None
    above: int | float | None = None
    below: int | float | None = None
    one_of: list[Scalar] | None = None
    always: bool | None = None


@dataclass(frozen=True)
class ArgumentCheck:
    """One check of one argument of one tool; `rule` is its name in decisions."""

    rule: str
    line: int
    tool: str
    arg: str
    op: str
    operand: Any

    def failure(self, args: Mapping[str, Any] | None) -> str | None:
        """None when `args` pass this check, else why they fail."""
        value = lookup(args, tuple(self.arg.split(".")))
        if value is MISSING and self.op != "required":
            return None
        reason = CHECKS[self.op][0](value, self.operand)
        return None if reason is None else f"argument {self.arg!r} {reason}"


@dataclass(frozen=True)
class ApprovalCheck:
    """One approval condition; `needed(args)` says whether it asks for a human."""

    rule: str
    line: int
    tool: str
    arg: str | None
    op: str
    operand: Any

    def needed(self, args: Mapping[str, Any] | None) -> str | None:
        """None when no approval is needed, else why it is."""
        if self.op == "always":
            return f"every call of {self.tool} needs approval"
        assert self.arg is not None
        value = lookup(args, tuple(self.arg.split(".")))
        name = f"argument {self.arg!r}"
        if self.op in ("above", "below"):
            if value is MISSING:
                return f"{name} is absent (needs approval when {self.op} {self.operand})"
            if not is_number(value):
                return (
                    f"{name} = {json.dumps(value, default=repr)} is not a number (needs "
                    f"approval when {self.op} {self.operand})"
                )
            if self.op == "above" and value > self.operand:
                return f"{name} = {value} is above {self.operand}"
            if self.op == "below" and value < self.operand:
                return f"{name} = {value} is below {self.operand}"
        elif any(same_value(value, a) for a in self.operand):
            return f"{name} = {json.dumps(value)} is one of {describe(list(self.operand))}"
        return None


@dataclass(frozen=True)
class ConstraintSet:
    """Argument checks and approval conditions, by object (`tool:<name>`), in file order."""

    checks: Mapping[str, tuple[ArgumentCheck, ...]]
    approvals: Mapping[str, tuple[ApprovalCheck, ...]]
    taint: Mapping[str, TaintRule] = field(default_factory=dict)
    """`[[taint]]` rules by object: what a call from a tainted run gets."""

    def first_failure(
        self, obj: str, args: Mapping[str, Any] | None
    ) -> tuple[ArgumentCheck, str] | None:
        for check in self.checks.get(obj, ()):
            reason = check.failure(args)
            if reason is not None:
                return check, reason
        return None

    def first_approval(
        self, obj: str, args: Mapping[str, Any] | None
    ) -> tuple[ApprovalCheck, str] | None:
        for approval in self.approvals.get(obj, ()):
            reason = approval.needed(args)
            if reason is not None:
                return approval, reason
        return None


def parse_constraints(file: str, text: str) -> ConstraintSet:
    """Parse constraints.toml; raise `PolicyError` naming file and line of every problem."""
    entries = read_toml_entries(file, text, ("constraint", "approval", "taint"))
    problems: list[PolicyProblem] = []
    checks: list[ArgumentCheck] = []
    approvals: list[ApprovalCheck] = []
    for entry in entries["constraint"]:
        constraint = validate_entry(file, entry, _ConstraintEntry, problems)
        if constraint is not None:
            checks.extend(_constraint_checks(file, entry, constraint, problems))
    for entry in entries["approval"]:
        approval = validate_entry(file, entry, _ApprovalEntry, problems)
        if approval is not None:
            approvals.extend(_approval_checks(file, entry, approval, problems))
    taint = parse_taint_rules(file, entries["taint"], problems)
    if problems:
        raise PolicyError(problems)
    by_check: dict[str, list[ArgumentCheck]] = {}
    for check in sorted(checks, key=lambda c: c.line):
        by_check.setdefault(f"tool:{check.tool}", []).append(check)
    by_approval: dict[str, list[ApprovalCheck]] = {}
    for approval_check in sorted(approvals, key=lambda c: c.line):
        by_approval.setdefault(f"tool:{approval_check.tool}", []).append(approval_check)
    return ConstraintSet(
        {k: tuple(v) for k, v in by_check.items()},
        {k: tuple(v) for k, v in by_approval.items()},
        taint,
    )


def _check_names(
    file: str, entry: TomlEntry, tool: str, arg: str | None, problems: list[PolicyProblem]
) -> bool:
    ok = True
    if not _TOOL.fullmatch(tool):
        problems.append(
            PolicyProblem(
                file,
                entry.line_of("tool"),
                f"tool {tool!r} is not a tool name (letters, digits, _ - and dots; no wildcards)",
            )
        )
        ok = False
    if arg is not None and not _ARG.fullmatch(arg):
        problems.append(
            PolicyProblem(
                file, entry.line_of("arg"), f"arg {arg!r} is not an argument name or dotted path"
            )
        )
        ok = False
    return ok


def _constraint_checks(
    file: str, entry: TomlEntry, c: _ConstraintEntry, problems: list[PolicyProblem]
) -> list[ArgumentCheck]:
    if not _check_names(file, entry, c.tool, c.arg, problems):
        return []
    operands: dict[str, Any] = {}
    before = len(problems)

    def bad(key: str, reason: str) -> None:
        problems.append(PolicyProblem(file, entry.line_of(key), f"{key}: {reason}"))

    if c.required is not None:
        if c.required:
            operands["required"] = True
        else:
            bad("required", "`required = false` is the default; remove it")
    for key in ("min", "max"):
        bound = getattr(c, key)
        if bound is not None:
            if is_number(bound):
                operands[key] = bound
            else:
                bad(key, "must be a finite number")
    if c.min is not None and c.max is not None and c.min > c.max:
        bad("max", f"max {c.max} is below min {c.min}")
    if c.one_of is not None:
        if c.one_of:
            operands["one_of"] = tuple(c.one_of)
        else:
            bad("one_of", "an empty list allows nothing; remove the tool's rule instead")
    if c.host_in is not None:
        wrong = [h for h in c.host_in if not _HOST.fullmatch(h)]
        if wrong or not c.host_in:
            bad("host_in", f"needs lower-case host names, got {wrong or 'an empty list'}")
        else:
            operands["host_in"] = frozenset(c.host_in)
    for key in ("regex", "not_regex"):
        pattern = getattr(c, key)
        if pattern is not None:
            try:
                operands[key] = re.compile(pattern)
            except re.error as exc:
                bad(key, f"invalid regular expression: {exc}")
    if c.max_length is not None:
        if c.max_length >= 0:
            operands["max_length"] = c.max_length
        else:
            bad("max_length", "must be 0 or more")
    if not operands and len(problems) == before:
        problems.append(
            PolicyProblem(
                file,
                entry.line,
                f"[[constraint]] for {c.tool}.{c.arg} has no check; use one of {sorted(CHECKS)}",
            )
        )
    if len(problems) != before:
        return []
    result = []
    for op, operand in operands.items():
        line = entry.line_of(op)
        summary = CHECKS[op][1](operand)
        result.append(
            ArgumentCheck(
                f"{file}:{line} [{c.tool}].{c.arg} {summary}", line, c.tool, c.arg, op, operand
            )
        )
    return result


def _approval_checks(
    file: str, entry: TomlEntry, a: _ApprovalEntry, problems: list[PolicyProblem]
) -> list[ApprovalCheck]:
    if not _check_names(file, entry, a.tool, a.arg, problems):
        return []
    conditions: dict[str, Any] = {}
    for key in ("above", "below"):
        bound = getattr(a, key)
        if bound is not None:
            if not is_number(bound):
                problems.append(
                    PolicyProblem(file, entry.line_of(key), f"{key}: must be a finite number")
                )
                return []
            conditions[key] = bound
    if a.one_of is not None:
        conditions["one_of"] = tuple(a.one_of)
    if a.always is not None:
        if not a.always:
            problems.append(
                PolicyProblem(
                    file,
                    entry.line_of("always"),
                    "always: `always = false` asks for nothing; remove it",
                )
            )
            return []
        conditions["always"] = True
    if len(conditions) != 1:
        problems.append(
            PolicyProblem(
                file,
                entry.line,
                "an [[approval]] needs exactly one of above, below, one_of, always",
            )
        )
        return []
    op, operand = next(iter(conditions.items()))
    if (op == "always") != (a.arg is None):
        problems.append(
            PolicyProblem(
                file,
                entry.line_of("arg"),
                "`arg` is needed with above, below and one_of, and not allowed with always",
            )
        )
        return []
    line = entry.line_of(op)
    if op == "one_of":
        summary = f"in {describe(list(operand))}"
    else:
        summary = {"above": f"> {operand}", "below": f"< {operand}", "always": "always"}[op]
    target = f"[{a.tool}]" if a.arg is None else f"[{a.tool}].{a.arg}"
    return [ApprovalCheck(f"{file}:{line} {target} {summary}", line, a.tool, a.arg, op, operand)]
