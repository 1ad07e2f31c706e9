"""A malformed policy is rejected with file, line and reason, and nothing of it is loaded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentd.policy import PolicyError, load_policy

CASES: list[tuple[str, str, str, str]] = [
    # (file, text or "+LINE" to append a line, expected "file:line", reason substring)
    ("model.conf", "MATCHER", "model.conf:19", "must be `g(r.sub, p.sub)"),
    ("model.conf", "+[policy_extra]\n", "model.conf:20", "unknown section [policy_extra]"),
    ("model.conf", "+m2 = r.sub == p.sub\n", "model.conf:20", "unknown key 'm2'"),
    (
        "model.conf",
        "[request_definition]\nr = sub, obj, act\n",
        "model.conf:0",
        "missing [policy_definition]",
    ),
    ("policy.csv", "+p, intake, tool:x, call\n", "policy.csv:END", "4 fields"),
    ("policy.csv", "+p, intake, tool:x, call, allow, extra\n", "policy.csv:END", "4 fields"),
    (
        "policy.csv",
        "+p, intake, tool:x, call, permit\n",
        "policy.csv:END",
        "effect must be `allow` or `deny`",
    ),
    ("policy.csv", "+p, intake, tool:x, call, allow # why\n", "policy.csv:END", "effect"),
    (
        "policy.csv",
        "+p, intake, tool:loan*, call, allow\n",
        "policy.csv:END",
        "`*` only at the end right after `:` or `.`",
    ),
    ("policy.csv", "+p, intake, tool:*.approve, call, allow\n", "policy.csv:END", "object"),
    ("policy.csv", "+p, *, tool:x, call, allow\n", "policy.csv:END", "no wildcards"),
    ("policy.csv", "+p, intake, tool:x, ca*ll, allow\n", "policy.csv:END", "action"),
    ("policy.csv", "+p, intake, keyMatch(tool:x), call, allow\n", "policy.csv:END", "object"),
    ("policy.csv", "+x, intake, tool:x\n", "policy.csv:END", "starts with `p` or `g`"),
    (
        "policy.csv",
        "+p, intake, agent:underwriter, send, allow\n",
        "policy.csv:END",
        "duplicate of line 30",
    ),
    ("policy.csv", "+g, role:agent, role:loan-agent\n", "policy.csv:END", "role cycle"),
    ("policy.csv", "+g, intake, intake\n", "policy.csv:END", "member of itself"),
    ("policy.csv", "+g, intake\n", "policy.csv:END", "2 fields"),
    (
        "constraints.toml",
        '+[[constraint]]\ntool = "x"\narg = "a"\nmaxx = 3\n',
        "constraints.toml:END+3",
        "unknown field 'maxx'",
    ),
    (
        "constraints.toml",
        '+[[constraint]]\ntool = "x"\narg = "a"\nmax = "3"\n',
        "constraints.toml:END+3",
        "max",
    ),
    (
        "constraints.toml",
        '+[[constraint]]\ntool = "x"\narg = "a"\nregex = "("\n',
        "constraints.toml:END+3",
        "invalid regular expression",
    ),
    (
        "constraints.toml",
        '+[[constraint]]\ntool = "x"\narg = "a"\n',
        "constraints.toml:END",
        "has no check",
    ),
    (
        "constraints.toml",
        '+[[constraint]]\ntool = "x"\narg = "a"\nmin = 5\nmax = 1\n',
        "constraints.toml:END+4",
        "max 1 is below min 5",
    ),
    (
        "constraints.toml",
        '+[[constraint]]\ntool = "x"\narg = "a"\none_of = []\n',
        "constraints.toml:END+3",
        "empty list",
    ),
    (
        "constraints.toml",
        '+[[constraint]]\ntool = "x"\narg = "a"\nhost_in = ["EVIL"]\n',
        "constraints.toml:END+3",
        "lower-case host names",
    ),
    (
        "constraints.toml",
        '+[[constraint]]\ntool = "x.*"\narg = "a"\nmax = 1\n',
        "constraints.toml:END+1",
        "no wildcards",
    ),
    (
        "constraints.toml",
        '+[[constraint]]\ntool = "x"\narg = "a b"\nmax = 1\n',
        "constraints.toml:END+2",
        "not an argument name",
    ),
    (
        "constraints.toml",
        '+[[approval]]\ntool = "x"\narg = "a"\nabove = 1\nbelow = 0\n',
        "constraints.toml:END",
        "exactly one of above, below, one_of, always",
    ),
    (
        "constraints.toml",
        '+[[approval]]\ntool = "x"\nabove = 1\n',
        "constraints.toml:END",
        "`arg` is needed",
    ),
    (
        "constraints.toml",
        '+[[approval]]\ntool = "x"\narg = "a"\nabove = 1\neval = "1"\n',
        "constraints.toml:END+4",
        "unknown field 'eval'",
    ),
    ("constraints.toml", "+[[constraint]\n", "constraints.toml:END", "TOML syntax error"),
    ("constraints.toml", "+[rules]\nx = 1\n", "constraints.toml:END", "unknown table or key"),
    (
        "constraints.toml",
        'constraint = [{ tool = "x", arg = "a", max = 1 }]\n',
        "constraints.toml:1",
        "as its own [[constraint]] block",
    ),
    (
        "limits.toml",
        '+[[limit]]\ntool = "a"\nper_second = 0\nburst = 1\n',
        "limits.toml:END+2",
        "per_second must be a positive number",
    ),
]


def _end_line(policy_dir: Path, file: str) -> str:
    """The line an appended rule lands on (the example files grow; the tests need not care)."""
    return str(len((policy_dir / file).read_text().splitlines()) + 1)


def _edit(policy_dir: Path, file: str, text: str) -> None:
    path = policy_dir / file
    if text == "MATCHER":
        path.write_text(path.read_text().replace("keyMatch(r.obj, p.obj)", "r.obj == p.obj"))
    elif text.startswith("+"):
        path.write_text(path.read_text() + text[1:])
    else:
        path.write_text(text)


@pytest.mark.parametrize(
    ("file", "text", "where", "reason"), CASES, ids=[f"{i:02d}-{c[0]}" for i, c in enumerate(CASES)]
)
def test_malformed_file_is_rejected_with_file_and_line(
    policy_dir: Path, file: str, text: str, where: str, reason: str
) -> None:
    end = int(_end_line(policy_dir, file))
    where = re.sub(r"END(?:\+(\d+))?", lambda m: str(end + int(m.group(1) or 0)), where)
    _edit(policy_dir, file, text)
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    assert any(p.startswith(where + ":") and reason in p for p in caught.value.problems), (
        caught.value.problems
    )
    assert file in caught.value.source


def test_every_file_is_checked_and_all_problems_reported(policy_dir: Path) -> None:
    end = int(_end_line(policy_dir, "policy.csv"))
    limits_end = _end_line(policy_dir, "limits.toml")
    _edit(policy_dir, "policy.csv", "+p, a, b\np, a, b, c, d\n")
    _edit(policy_dir, "limits.toml", "+[[limit]]\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    lines = [f"{p.file}:{p.line}" for p in caught.value.located]
    assert lines[:2] == [f"policy.csv:{end}", f"policy.csv:{end + 1}"]
    assert f"limits.toml:{limits_end}" in lines
    assert "policy.csv, limits.toml" in str(caught.value) or "limits.toml, policy.csv" in str(
        caught.value
    )


def test_a_missing_file_is_rejected(policy_dir: Path) -> None:
    (policy_dir / "limits.toml").unlink()
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    assert caught.value.problems[0].startswith("limits.toml:0: cannot read")


def test_a_file_that_is_not_utf8_is_rejected_with_line(policy_dir: Path) -> None:
    (policy_dir / "policy.csv").write_bytes(b"# ok\np, a, b, c, allow\np, \xff, b, c, allow\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(policy_dir)
    assert caught.value.problems[0].startswith("policy.csv:3: not UTF-8")


def test_empty_constraints_and_limits_are_valid(policy_dir: Path) -> None:
    (policy_dir / "constraints.toml").write_text("# no constraints\n")
    (policy_dir / "limits.toml").write_text("")
    policy = load_policy(policy_dir)
    assert not policy.constraints.checks and not policy.limits.entries
