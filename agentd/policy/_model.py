"""model.conf: the Casbin model agentd evaluates, checked line by line.

decide() does not interpret an arbitrary Casbin model: it compiles policy.csv into an index that
implements exactly one model (below), and the tests prove that index agrees with pycasbin's own
enforce() on this model. model.conf still exists so that auditors, `casbin` tooling and the tests'
raw enforcer read the same semantics from the same file; a model.conf that says anything else is
rejected rather than silently evaluated differently.

    [request_definition]  r = sub, obj, act
    [policy_definition]   p = sub, obj, act, eft
    [role_definition]     g = _, _
    [policy_effect]       e = some(where (p.eft == allow)) && !some(where (p.eft == deny))
    [matchers]            m = g(r.sub, p.sub) && keyMatch(r.obj, p.obj)
                              && (r.act == p.act || p.act == "*")

Deny by default: a request is allowed only if some rule allows it and no rule denies it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._errors import PolicyError, PolicyProblem

REQUIRED: dict[tuple[str, str], str] = {
    ("request_definition", "r"): "sub, obj, act",
    ("policy_definition", "p"): "sub, obj, act, eft",
    ("role_definition", "g"): "_, _",
    ("policy_effect", "e"): "some(where (p.eft == allow)) && !some(where (p.eft == deny))",
    ("matchers", "m"): (
        'g(r.sub, p.sub) && keyMatch(r.obj, p.obj) && (r.act == p.act || p.act == "*")'
    ),
}

_SECTION = re.compile(r"^\[([A-Za-z_]+)\]$")
_ASSIGN = re.compile(r"^([A-Za-z0-9_]+)\s*=\s*(.*)$")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


@dataclass(frozen=True)
class AccessModel:
    """The validated model; `default_deny_rule` names the effect line that denies by default."""

    file: str
    effect_line: int

    @property
    def default_deny_rule(self) -> str:
        return f"{self.file}:{self.effect_line}"


def parse_model(file: str, text: str) -> AccessModel:
    """Check that `text` is the one model agentd evaluates; raise `PolicyError` where it is not."""
    problems: list[PolicyProblem] = []
    seen: dict[tuple[str, str], int] = {}
    section: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            problems.append(PolicyProblem(file, number, "line continuations are not supported"))
            continue
        header = _SECTION.match(line)
        if header:
            section = header.group(1)
            if section not in {s for s, _ in REQUIRED}:
                problems.append(PolicyProblem(file, number, f"unknown section [{section}]"))
            continue
        assign = _ASSIGN.match(line)
        if not assign:
            problems.append(PolicyProblem(file, number, f"expected `key = value`, got {line!r}"))
            continue
        if section is None:
            problems.append(PolicyProblem(file, number, "key outside of any [section]"))
            continue
        slot = (section, assign.group(1))
        if slot not in REQUIRED:
            problems.append(
                PolicyProblem(
                    file,
                    number,
                    f"unknown key {slot[1]!r} in [{section}]; "
                    "agentd evaluates a single fixed model",
                )
            )
            continue
        if slot in seen:
            problems.append(
                PolicyProblem(
                    file,
                    number,
                    f"{slot[1]!r} is defined twice in [{section}] (first at line {seen[slot]})",
                )
            )
            continue
        seen[slot] = number
        if _squash(assign.group(2)) != _squash(REQUIRED[slot]):
            problems.append(
                PolicyProblem(
                    file,
                    number,
                    f"[{section}] {slot[1]} must be `{REQUIRED[slot]}`: decide() "
                    "implements only this model (deny by default, deny wins)",
                )
            )
    for slot in REQUIRED:
        if slot not in seen:
            problems.append(
                PolicyProblem(file, 0, f"missing [{slot[0]}] {slot[1]} = {REQUIRED[slot]}")
            )
    if problems:
        raise PolicyError(problems)
    return AccessModel(file, seen[("policy_effect", "e")])
