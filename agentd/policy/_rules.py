"""policy.csv: access rules and role links, and the index decide() evaluates them with.

Grammar (a strict subset of what pycasbin's file adapter reads, so both read the same rules):

    # comment                       blank lines and lines starting with `#` are ignored
    p, SUBJECT, OBJECT, ACTION, allow|deny
    g, MEMBER, ROLE                 MEMBER holds every permission of ROLE (transitively)

Names use only `A-Z a-z 0-9 _ . : @ / -`. Wildcards are allowed in two places only:
- an OBJECT may end in `*` right after `:` or `.` (or be `*` alone); it matches every object that
  starts with the text before the `*` (`tool:loan.*` matches `tool:loan.approve` and
  `tool:loan.x.y`, never `tool:loanshark`). This is exactly pycasbin's keyMatch for such patterns;
  the placement rule exists because keyMatch matches raw prefixes (`tool:loan*` would match
  `tool:loanshark`).
- an ACTION may be `*` alone: every action.
Role links are checked: no cycles, and no chain longer than 9 links, because pycasbin's role
manager stops after 9 (max_hierarchy_level 10) and the index would otherwise grant more than
Casbin does. Duplicate lines are rejected.

The index computes each member's role closure once per load and groups rules by subject, so a
decision looks at the few rules of the subjects the requester acts as instead of every rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ._errors import PolicyError, PolicyProblem

MAX_ROLE_CHAIN = 9  # links pycasbin's default role manager follows (max_hierarchy_level = 10)

_NAME = re.compile(r"[A-Za-z0-9_.:@/-]+")
_OBJECT = re.compile(r"\*|[A-Za-z0-9_.:@/-]*[:.]\*|[A-Za-z0-9_.:@/-]+")

Effect = Literal["allow", "deny"]


@dataclass(frozen=True)
class AccessRule:
    """One `p` line. `prefix` is set for a wildcard object: the text before its `*`."""

    name: str
    line: int
    subject: str
    object: str
    action: str
    effect: Effect
    prefix: str | None

    @property
    def text(self) -> str:
        return f"p, {self.subject}, {self.object}, {self.action}, {self.effect}"

    def matches(self, obj: str, act: str) -> bool:
        """Whether this rule's object and action match (the subject is checked by the index)."""
        if self.action != "*" and self.action != act:
            return False
        return obj.startswith(self.prefix) if self.prefix is not None else obj == self.object


@dataclass(frozen=True)
class RoleLink:
    """One `g` line: `member` holds the permissions of `role`."""

    name: str
    line: int
    member: str
    role: str


def parse_rules(file: str, text: str) -> tuple[list[AccessRule], list[RoleLink]]:
    """Parse policy.csv; raise `PolicyError` listing every bad line."""
    problems: list[PolicyProblem] = []
    rules: list[AccessRule] = []
    links: list[RoleLink] = []
    first_seen: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = [t.strip() for t in line.split(",")]
        problem = _check_tokens(tokens)
        if problem:
            problems.append(PolicyProblem(file, number, problem))
            continue
        key = tuple(tokens)
        if key in first_seen:
            problems.append(PolicyProblem(file, number, f"duplicate of line {first_seen[key]}"))
            continue
        first_seen[key] = number
        name = f"{file}:{number}"
        if tokens[0] == "p":
            _, sub, obj, act, eft = tokens
            prefix = obj[:-1] if obj.endswith("*") else None
            effect: Effect = "allow" if eft == "allow" else "deny"
            rules.append(AccessRule(name, number, sub, obj, act, effect, prefix))
        else:
            links.append(RoleLink(name, number, tokens[1], tokens[2]))
    problems.extend(_check_links(file, links))
    if problems:
        raise PolicyError(problems)
    return rules, links


def _check_tokens(tokens: list[str]) -> str | None:
    kind = tokens[0]
    if kind == "p":
        if len(tokens) != 5:
            return (
                f"a `p` line has 4 fields (subject, object, action, effect), got {len(tokens) - 1}"
            )
        _, sub, obj, act, eft = tokens
        if not _NAME.fullmatch(sub):
            return f"subject {sub!r}: use only A-Z a-z 0-9 _ . : @ / - (no wildcards)"
        if not _OBJECT.fullmatch(obj):
            return (
                f"object {obj!r}: use only A-Z a-z 0-9 _ . : @ / -, and `*` only at the end "
                "right after `:` or `.`"
            )
        if act != "*" and not _NAME.fullmatch(act):
            return f"action {act!r}: use a name or `*`"
        if eft not in ("allow", "deny"):
            return f"effect must be `allow` or `deny`, got {eft!r}"
        return None
    if kind == "g":
        if len(tokens) != 3:
            return f"a `g` line has 2 fields (member, role), got {len(tokens) - 1}"
        for field in tokens[1:]:
            if not _NAME.fullmatch(field):
                return f"role link name {field!r}: use only A-Z a-z 0-9 _ . : @ / -"
        if tokens[1] == tokens[2]:
            return f"{tokens[1]!r} cannot be a member of itself"
        return None
    return f"a line starts with `p` or `g`, got {kind!r}"


def _check_links(file: str, links: list[RoleLink]) -> list[PolicyProblem]:
    """Reject cycles and chains longer than Casbin follows."""
    parents: dict[str, list[RoleLink]] = {}
    for link in links:
        parents.setdefault(link.member, []).append(link)
    depth: dict[str, int] = {}
    problems: list[PolicyProblem] = []
    reported: set[int] = set()

    def longest(node: str, path: tuple[str, ...]) -> int:
        if node in depth:
            return depth[node]
        best = 0
        for link in parents.get(node, ()):
            if link.role in path:
                if link.line not in reported:
                    reported.add(link.line)
                    cycle = " -> ".join((*path[path.index(link.role) :], link.role))
                    problems.append(PolicyProblem(file, link.line, f"role cycle: {cycle}"))
                continue
            best = max(best, 1 + longest(link.role, (*path, link.role)))
        depth[node] = best
        return best

    for link in links:
        longest(link.member, (link.member,))
    if not problems:
        for link in links:
            if depth[link.member] > MAX_ROLE_CHAIN and link.line not in reported:
                reported.add(link.line)
                problems.append(
                    PolicyProblem(
                        file,
                        link.line,
                        f"role chain from {link.member!r} is {depth[link.member]} "
                        f"links long; Casbin follows at most {MAX_ROLE_CHAIN}",
                    )
                )
    return problems


class AccessIndex:
    """Rules indexed by subject, and each member's role closure, computed once per load."""

    def __init__(self, rules: Iterable[AccessRule], links: Iterable[RoleLink]) -> None:
        self.rules = tuple(rules)
        self.links = tuple(links)
        roles_of: dict[str, list[str]] = {}
        for link in self.links:
            roles_of.setdefault(link.member, []).append(link.role)
        self._closure: dict[str, tuple[str, ...]] = {}
        for member in roles_of:
            seen = {member}
            order = [member]
            for current in order:  # breadth first; `order` grows while we walk it
                for role in roles_of.get(current, ()):
                    if role not in seen:
                        seen.add(role)
                        order.append(role)
            self._closure[member] = tuple(order)
        # (subject, object, action) -> (first allow, first deny) for exact objects
        exact: dict[tuple[str, str, str], tuple[AccessRule | None, AccessRule | None]] = {}
        wild: dict[str, list[tuple[str, AccessRule]]] = {}
        for rule in self.rules:
            if rule.prefix is not None:
                wild.setdefault(rule.subject, []).append((rule.prefix, rule))
                continue
            key = (rule.subject, rule.object, rule.action)
            allow, deny = exact.get(key, (None, None))
            if rule.effect == "allow" and allow is None:
                allow = rule
            elif rule.effect == "deny" and deny is None:
                deny = rule
            exact[key] = (allow, deny)
        self._exact = exact
        self._wild = {sub: tuple(rs) for sub, rs in wild.items()}

    def subjects_of(self, subject: str) -> tuple[str, ...]:
        """`subject` and every role it holds, directly or through other roles."""
        return self._closure.get(subject) or (subject,)

    def evaluate(self, sub: str, obj: str, act: str) -> tuple[AccessRule | None, AccessRule | None]:
        """The first (lowest line) allowing and the first denying rule that match, if any."""
        allow: AccessRule | None = None
        deny: AccessRule | None = None
        exact = self._exact
        wild = self._wild
        for s in self._closure.get(sub) or (sub,):
            for hit in (exact.get((s, obj, act)), exact.get((s, obj, "*"))):
                if hit is not None:
                    a, d = hit
                    if a is not None and (allow is None or a.line < allow.line):
                        allow = a
                    if d is not None and (deny is None or d.line < deny.line):
                        deny = d
            for prefix, rule in wild.get(s, ()):
                if obj.startswith(prefix) and (rule.action == "*" or rule.action == act):
                    if rule.effect == "allow":
                        if allow is None or rule.line < allow.line:
                            allow = rule
                    elif deny is None or rule.line < deny.line:
                        deny = rule
        return allow, deny

    def matching(self, sub: str, obj: str, act: str) -> list[AccessRule]:
        """Every rule that matches the request, in file order (for explain; not on the hot path)."""
        subjects = set(self.subjects_of(sub))
        return [r for r in self.rules if r.subject in subjects and r.matches(obj, act)]

    def role_paths(self, subject: str) -> dict[str, tuple[RoleLink, ...]]:
        """For each subject `subject` acts as, the shortest chain of links that grants it."""
        paths: dict[str, tuple[RoleLink, ...]] = {subject: ()}
        order = [subject]
        for current in order:
            for link in self.links:
                if link.member == current and link.role not in paths:
                    paths[link.role] = (*paths[current], link)
                    order.append(link.role)
        return paths
