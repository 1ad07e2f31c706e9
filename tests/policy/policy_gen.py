"""Seeded random policies for the property tests: role chains, wildcards, denies, constraints."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "policies"

AGENTS = [f"agent{i}" for i in range(12)]
OPERATORS = [f"operator:op{i}" for i in range(5)]
ROLES = [f"role:r{i}" for i in range(15)]
TOOLS = [
    "tool:pay",
    "tool:fetch",
    "tool:grp.a",
    "tool:grp.b",
    "tool:grp.b.c",
    "tool:grpx",
    "tool:query",
    "tool:other",
]
OBJECTS = [
    *TOOLS,
    "agent:agent1",
    "agent:agent2",
    "agent:ops",
    "model:main",
    "model:big",
    "ctl:scale",
    "ctl:status",
    "api:register",
]
PATTERNS = ["tool:grp.*", "tool:*", "ctl:*", "agent:*", "model:*", "*", "tool:grp.b.*"]
ACTIONS = ["call", "send", "infer", "spawn", "scale", "status", "register"]

CONSTRAINTS = """\
[[constraint]]
tool = "pay"
arg = "amount"
required = true
min = 1
max = 1000

[[constraint]]
tool = "pay"
arg = "payee"
one_of = ["p1", "p2", 3, true]

[[constraint]]
tool = "pay"
arg = "meta.note"
max_length = 8

[[constraint]]
tool = "fetch"
arg = "url"
host_in = ["good.example", "ok.example"]

[[constraint]]
tool = "query"
arg = "q"
regex = "(?i)select [a-z ]*"
not_regex = "(?i)drop"

[[approval]]
tool = "pay"
arg = "amount"
above = 100

[[approval]]
tool = "fetch"
arg = "url"
one_of = ["https://ok.example/approve"]

[[approval]]
tool = "grp.a"
always = true
"""


def write_random_policy(directory: Path, *, seed: int, rules: int, links: int) -> None:
    """Write a valid random policy (the example model.conf, random policy.csv) to `directory`."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "model.conf", directory / "model.conf")
    lines = ["# generated"]
    # One chain of exactly 9 links (the most Casbin follows), then random links from members to
    # roles and from lower to higher roles (acyclic), each kept only if no chain passes 9 links.
    edges: set[tuple[str, str]] = {(ROLES[i], ROLES[i + 1]) for i in range(9)}
    while len(edges) < links:
        if rng.random() < 0.6:
            edge = (rng.choice(AGENTS + OPERATORS), rng.choice(ROLES))
        else:
            i, j = sorted(rng.sample(range(len(ROLES)), 2))
            edge = (ROLES[i], ROLES[j])
        if longest_chain(edges | {edge}) <= 9:
            edges.add(edge)
    for member, role in sorted(edges):
        lines.append(f"g, {member}, {role}")
    seen: set[tuple[str, str, str, str]] = set()
    while len(seen) < rules:
        subject = rng.choice(AGENTS + OPERATORS + ROLES)
        obj = rng.choice(PATTERNS) if rng.random() < 0.15 else rng.choice(OBJECTS)
        action = "*" if rng.random() < 0.1 else rng.choice(ACTIONS)
        effect = "deny" if rng.random() < 0.15 else "allow"
        rule = (subject, obj, action, effect)
        if rule not in seen:
            seen.add(rule)
            lines.append(f"p, {subject}, {obj}, {action}, {effect}")
    (directory / "policy.csv").write_text("\n".join(lines) + "\n")
    (directory / "constraints.toml").write_text(CONSTRAINTS)
    (directory / "limits.toml").write_text("")


def longest_chain(edges: set[tuple[str, str]]) -> int:
    """The number of links in the longest member-to-role chain."""
    parents: dict[str, list[str]] = {}
    for member, role in edges:
        parents.setdefault(member, []).append(role)
    memo: dict[str, int] = {}

    def longest(node: str) -> int:
        if node not in memo:
            memo[node] = max((1 + longest(p) for p in parents.get(node, ())), default=0)
        return memo[node]

    return max((longest(node) for node in parents), default=0)
