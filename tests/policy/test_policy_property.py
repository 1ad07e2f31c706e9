"""Property tests: decide() against an independent oracle and against raw pycasbin.

10,000 random requests (subject, object, action, arguments) against a generated policy with role
chains up to Casbin's limit, wildcard objects and actions, explicit denies, argument constraints
and approval rules. Every decision must equal the oracle's, and the access step must equal raw
pycasbin's enforce() loaded by pycasbin itself from the same files.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import casbin  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentd.policy import DecisionPoint, PolicyError, Request

from .policy_gen import (
    ACTIONS,
    AGENTS,
    OBJECTS,
    OPERATORS,
    ROLES,
    write_random_policy,
)
from .policy_oracle import Oracle


def _profile(examples: int) -> settings:
    """Deterministic (derandomized, no example database): CI runs the same requests each time."""
    return settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Objects near the wildcard patterns: the exact prefix, one character short, a lookalike.
EDGE_OBJECTS = [
    "tool:grp.",
    "tool:grp",
    "tool:grpx",
    "tool:grp.b.",
    "tool:",
    "tool",
    "ctl:",
    "agent:",
    "model:",
    "x",
    "tool:pay.extra",
    "tool:payx",
]

# Argument values: the boundaries of the generated constraints and approval rules, the URL
# tricks of host_in, type confusions (strings for numbers, bools for numbers), nested objects,
# non-finite floats (not JSON: a malformed request), plus any integer and float.
VALUE_POOL: list[Any] = [
    0,
    1,
    100,
    101,
    1000,
    1001,
    -1,
    100.0,
    100.5,
    1000.0,
    1e300,
    True,
    False,
    None,
    "",
    "3",
    3,
    "p1",
    "p2",
    "P1",
    "select a",
    "SELECT x y",
    "select drop",
    "drop",
    "select 1;",
    "https://good.example/x",
    "https://ok.example/approve",
    "http://good.example:8080/",
    "https://bad.example/",
    "https://good.example@bad.example/",
    "ftp://good.example/",
    "https://good.example\\@bad.example",
    "https://GOOD.example/",
    "https://good.example:99999/",
    "https://[::1]/",
    "https://good.example./",
    " https://good.example/",
    "short",
    "too long!",
    "https://evil.example@good.example/",
    "https://api.creditbureau.example/v1",
    "https://api.creditbureau.example.evil.example/",
    "http://rates.example.org:443/x",
    [],
    [1, 2],
    ["p1"],
    {},
    {"note": "short"},
    {"note": "much too long"},
    {"note": 5},
    {"x": {"note": "n"}},
    math.nan,
    math.inf,
    -math.inf,
]
values = st.one_of(
    st.sampled_from(VALUE_POOL),
    st.integers(min_value=-5, max_value=2000),
    st.floats(),
    st.text(max_size=10),
)
# Per argument, values at the boundaries of the generated constraints, mixed with any value.
by_argument = {
    "amount": st.one_of(
        st.sampled_from([100, 101, 1000, 1000.0, 1001]),
        st.sampled_from([0, 1, 100.0, 1000.5, "100", 10000, 10001, 50000, 50000.0, 50001]),
        values,
    ),
    "payee": st.one_of(
        st.sampled_from(["p1", "p2", 3, True, 3.0, "3", 1, False]),
        st.sampled_from(["acct-1001", "acct-2002", "acct-9999", "ACCT-1001"]),
        values,
    ),
    "applicant_id": st.one_of(
        st.sampled_from(["A-1001", "A-12", "a-1001", "A-1001 ", "A-"]), values
    ),
    "query": st.one_of(
        st.sampled_from(
            [
                "SELECT 1",
                "select a from b; drop table b",
                "DELETE FROM x",
                "WITH a AS (SELECT 1) SELECT * FROM a",
                "select * into t from x",
                "select 1;",
            ]
        ),
        values,
    ),
    "url": st.one_of(st.sampled_from([v for v in VALUE_POOL if isinstance(v, str)]), values),
    "q": st.one_of(st.sampled_from(["select a", "SELECT x y", "select drop", "select 1;"]), values),
    "meta": st.one_of(
        st.sampled_from(
            [{}, {"note": "short"}, {"note": "much too long"}, {"note": ["a"]}, "note"]
        ),
        values,
    ),
    "other": values,
}
arguments = st.one_of(st.none(), st.fixed_dictionaries({}, optional=by_argument))
BATCH = 50  # requests per Hypothesis example: drawing a batch costs a fifth of single examples


def _batches(
    subjects: list[str],
    objects: list[str],
    actions: list[str],
    tools: list[str],
    callers: list[str],
) -> st.SearchStrategy[list[Request]]:
    request = st.builds(
        Request,
        st.sampled_from(subjects),
        st.sampled_from(objects),
        st.sampled_from(actions),
        arguments,
    )
    # Half the requests are calls of the tools that have constraints, mostly by subjects that
    # may call them, so that the arguments matter.
    tool_call = st.builds(
        Request,
        st.sampled_from(callers) | st.sampled_from(subjects),
        st.sampled_from(tools),
        st.just("call"),
        st.fixed_dictionaries({}, optional=by_argument),
    )
    return st.lists(st.one_of(request, tool_call), min_size=BATCH, max_size=BATCH)


def _checker(directory: Path) -> tuple[Callable[[Request], None], Counter[str]]:
    point = DecisionPoint.from_dir(directory)
    raw = casbin.Enforcer(str(directory / "model.conf"), str(directory / "policy.csv"))
    oracle = Oracle(directory)
    raw_answers: dict[tuple[str, str, str], bool] = {}
    seen: Counter[str] = Counter()
    wildcard_rules = {r.name for r in point.policy.access.rules if r.prefix is not None}

    def check(request: Request) -> None:
        seen["requests"] += 1
        triple = (request.subject, request.object, request.action)
        if triple not in raw_answers:  # enforce() ignores arguments: ask once per triple
            raw_answers[triple] = raw.enforce(*triple)
        decision = point.decide(request)
        expected = oracle.decide(*triple, dict(request.args) if request.args else None)
        assert decision.effect == expected, (request, decision)
        allow, deny = point.policy.access.evaluate(*triple)
        assert (allow is not None and deny is None) == raw_answers[triple], (request, decision)
        oracle_effect, oracle_line = oracle.access(*triple)
        if decision.stage == "access":
            assert decision.effect == oracle_effect
            if oracle_line is None:
                assert decision.rule == point.policy.model.default_deny_rule
            else:
                assert decision.rule == f"policy.csv:{oracle_line}"
            assert decision.effect == ("allow" if raw_answers[triple] else "deny")
        elif decision.stage in ("constraint", "approval"):
            assert raw_answers[triple], "constraints run only after Casbin allowed"
            assert decision.rule.startswith("constraints.toml:")
        else:
            assert decision.stage == "request" and decision.effect == "deny"
            assert not _finite_json(request.args)
        assert decision.policy_version == point.version
        seen[f"{decision.stage} {decision.effect}"] += 1
        if decision.rule in wildcard_rules:
            seen[f"wildcard {decision.effect}"] += 1

    return check, seen


def _callers(directory: Path, subjects: list[str], tools: list[str]) -> list[str]:
    """The subjects the oracle lets call at least one of `tools`."""
    oracle = Oracle(directory)
    return [s for s in subjects if any(oracle.access(s, t, "call")[0] == "allow" for t in tools)]


def _finite_json(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_json(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_json(v) for v in value)
    return True


def test_ten_thousand_random_requests_match_oracle_and_raw_casbin(tmp_path: Path) -> None:
    write_random_policy(tmp_path, seed=7, rules=100, links=40)
    check, seen = _checker(tmp_path)
    subjects = [*AGENTS, *OPERATORS, *ROLES, "nobody", "role:unknown"]
    objects = [*OBJECTS, *EDGE_OBJECTS]
    actions = [*ACTIONS, "*", "other"]

    tools = ["tool:pay", "tool:fetch", "tool:query", "tool:grp.a"]

    @_profile(10_000 // BATCH)
    @given(_batches(subjects, objects, actions, tools, _callers(tmp_path, subjects, tools)))
    def run(requests: list[Request]) -> None:
        for request in requests:
            check(request)

    run()
    assert seen["requests"] >= 10_000
    # The requests reach every branch: access allows and denies (also by wildcard rules),
    # constraint denials, approvals, and malformed (non-finite) arguments.
    for outcome in (
        "access allow",
        "access deny",
        "constraint deny",
        "approval approval_required",
        "request deny",
        "wildcard allow",
        "wildcard deny",
    ):
        assert seen[outcome] >= 5, (outcome, seen)  # every branch reached (the mix varies)


def test_random_requests_on_the_example_policy(policy_dir: Path) -> None:
    check, seen = _checker(policy_dir)
    oracle = Oracle(policy_dir)
    subjects = sorted(
        {r[1] for r in oracle.rules} | {m for m, _ in oracle.links} | {"nobody", "operator:mallory"}
    )
    objects = sorted(
        {r[2].rstrip("*") + "x" for r in oracle.rules}
        | {r[2] for r in oracle.rules if "*" not in r[2]}
        | {"tool:loanshark", "tool:loan.", "ctl:"}
    )
    actions = sorted({r[3] for r in oracle.rules} - {"*"} | {"*", "other"})
    tools = sorted({f"tool:{c['tool']}" for c in oracle.constraints})

    @_profile(2_000 // BATCH)
    @given(_batches(subjects, objects, actions, tools, _callers(policy_dir, subjects, tools)))
    def run(requests: list[Request]) -> None:
        for request in requests:
            check(request)

    run()
    assert seen["requests"] >= 2_000
    assert seen["access allow"] >= 50 and seen["wildcard deny"] >= 20, seen


def test_a_nine_link_chain_is_followed_like_casbin_and_a_tenth_is_rejected(
    policy_dir: Path,
) -> None:
    chain = [f"role:c{i}" for i in range(10)]
    links = [f"g, {a}, {b}" for a, b in zip(chain, chain[1:], strict=False)]  # 9 links
    lines = [*links, "p, role:c9, tool:deep, call, allow"]
    (policy_dir / "policy.csv").write_text("\n".join(lines) + "\n")
    point = DecisionPoint.from_dir(policy_dir)
    raw = casbin.Enforcer(str(policy_dir / "model.conf"), str(policy_dir / "policy.csv"))
    for role in chain:
        assert raw.enforce(role, "tool:deep", "call")
        assert point.decide(Request(role, "tool:deep", "call")).effect == "allow"
    # A tenth link: Casbin would not reach role:c9 from the new member, so the loader refuses.
    (policy_dir / "policy.csv").write_text("\n".join(["g, agentx, role:c0", *lines]) + "\n")
    raw = casbin.Enforcer(str(policy_dir / "model.conf"), str(policy_dir / "policy.csv"))
    assert not raw.enforce("agentx", "tool:deep", "call")
    with pytest.raises(PolicyError) as caught:
        point.reload(policy_dir)
    assert "policy.csv:1: role chain from 'agentx' is 10 links long" in caught.value.problems[0]


def test_every_pooled_value_of_every_argument_alone(tmp_path: Path) -> None:
    """Systematic complement of the random test: each pooled value as the only argument, for
    every subject that may call a constrained tool, so no boundary depends on luck."""
    write_random_policy(tmp_path, seed=7, rules=100, links=40)
    point = DecisionPoint.from_dir(tmp_path)
    oracle = Oracle(tmp_path)
    subjects = [*AGENTS, *OPERATORS, *ROLES]
    tools = ["tool:pay", "tool:fetch", "tool:query", "tool:grp.a"]
    callers = _callers(tmp_path, subjects, tools)
    pool = [*VALUE_POOL, 100, 101, 1000, 1000.0, 1001, 1000.5, "p1", "p2", 3, 3.0, True]
    outcomes: Counter[str] = Counter()
    for subject in callers:
        for tool in tools:
            for key in ("amount", "payee", "url", "q", "meta"):
                for value in pool:
                    args = {key: value}
                    if key != "amount":  # `pay` requires an amount: give it a valid one
                        args["amount"] = 5
                    decision = point.decide(Request(subject, tool, "call", args))
                    assert decision.effect == oracle.decide(subject, tool, "call", args), (
                        subject,
                        tool,
                        args,
                        decision,
                    )
                    outcomes[decision.effect] += 1
    assert len(callers) >= 5
    assert min(outcomes.values()) >= 100 and len(outcomes) == 3, outcomes
