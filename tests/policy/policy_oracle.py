"""An independent oracle for policy decisions, for the property tests.

It reads the same files as `agentd.policy` but shares none of its code: it splits policy.csv
itself, walks role links afresh for every request (no closure, no index, no cache), scans every
rule, and re-implements the argument constraints from the documented semantics. If the decision
point and this oracle ever disagree, one of them misreads the policy.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

_MISSING = object()


class Oracle:
    def __init__(self, directory: Path) -> None:
        self.rules: list[tuple[int, str, str, str, str]] = []
        self.links: list[tuple[str, str]] = []
        text = (directory / "policy.csv").read_text()
        for number, line in enumerate(text.split("\n"), start=1):
            line = line.strip()
            if line == "" or line[0] == "#":
                continue
            fields = [f.strip() for f in line.split(",")]
            if fields[0] == "p":
                self.rules.append((number, fields[1], fields[2], fields[3], fields[4]))
            elif fields[0] == "g":
                self.links.append((fields[1], fields[2]))
        data = tomllib.loads((directory / "constraints.toml").read_text())
        self.constraints: list[dict[str, Any]] = data.get("constraint", [])
        self.approvals: list[dict[str, Any]] = data.get("approval", [])

    def roles(self, subject: str) -> set[str]:
        found = {subject}
        changed = True
        while changed:
            changed = False
            for member, role in self.links:
                if member in found and role not in found:
                    found.add(role)
                    changed = True
        return found

    @staticmethod
    def object_matches(obj: str, pattern: str) -> bool:
        if pattern.endswith("*"):
            stem = pattern[: len(pattern) - 1]
            return len(obj) >= len(stem) and obj[: len(stem)] == stem
        return obj == pattern

    def access(self, subject: str, obj: str, action: str) -> tuple[str, int | None]:
        """("allow" | "deny", deciding line or None for the default deny)."""
        roles = self.roles(subject)
        allows: list[int] = []
        denies: list[int] = []
        for number, sub, pattern, act, effect in self.rules:
            if sub in roles and self.object_matches(obj, pattern) and act in (action, "*"):
                (allows if effect == "allow" else denies).append(number)
        if denies:
            return "deny", min(denies)
        if allows:
            return "allow", min(allows)
        return "deny", None

    def decide(self, subject: str, obj: str, action: str, args: dict[str, Any] | None) -> str:
        try:
            args = json.loads(json.dumps(args or {}, allow_nan=False))
        except ValueError:
            return "deny"
        effect, _ = self.access(subject, obj, action)
        if effect == "deny" or not obj.startswith("tool:"):
            return effect
        tool = obj[len("tool:") :]
        for constraint in self.constraints:
            if constraint["tool"] != tool:
                continue
            value = _value(args, constraint["arg"])
            for op, operand in constraint.items():
                if op in ("tool", "arg"):
                    continue
                if not _passes(op, operand, value):
                    return "deny"
        for approval in self.approvals:
            if approval["tool"] == tool and _needs_approval(approval, args):
                return "approval_required"
        return "allow"


def _value(args: dict[str, Any], path: str) -> Any:
    value: Any = args
    for part in path.split("."):
        if type(value) is not dict or part not in value:
            return _MISSING
        value = value[part]
    return value


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _same(a: Any, b: Any) -> bool:
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if _number(a) and _number(b):
        return bool(a == b)
    return type(a) is str and type(b) is str and a == b


def _host(url: Any) -> str | None:
    if type(url) is not str or re.search(r"[\s\\\x00-\x1f]", url):
        return None
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        return None
    if parsed.scheme not in ("http", "https") or "@" in parsed.netloc:
        return None
    return parsed.hostname or None


def _passes(op: str, operand: Any, value: Any) -> bool:
    if value is _MISSING:
        return op != "required"
    if op == "required":
        return True
    if op == "min":
        return _number(value) and value >= operand
    if op == "max":
        return _number(value) and value <= operand
    if op == "one_of":
        return any(_same(value, x) for x in operand)
    if op == "host_in":
        return _host(value) in operand
    if op == "regex":
        return type(value) is str and re.fullmatch(operand, value) is not None
    if op == "not_regex":
        return type(value) is str and re.search(operand, value) is None
    if op == "max_length":
        return type(value) in (str, list) and len(value) <= operand
    raise AssertionError(f"oracle does not know op {op}")


def _needs_approval(approval: dict[str, Any], args: dict[str, Any]) -> bool:
    if approval.get("always"):
        return True
    value = _value(args, approval["arg"])
    if "above" in approval:
        return not (_number(value) and value <= approval["above"])
    if "below" in approval:
        return not (_number(value) and value >= approval["below"])
    return any(_same(value, x) for x in approval["one_of"])
