"""A loaded policy: one immutable snapshot of the four files, validated, indexed, versioned."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._constraints import ConstraintSet, parse_constraints
from ._errors import PolicyError, PolicyProblem, fail
from ._limits import RateLimits, parse_limits
from ._model import AccessModel, parse_model
from ._request import Decision, Effect
from ._rules import AccessIndex, parse_rules

if TYPE_CHECKING:
    import casbin


@dataclass(frozen=True)
class PolicyFiles:
    """Where a policy lives: `model.conf`, `policy.csv`, `constraints.toml`, `limits.toml`.

    All four are required (an empty constraints or limits file is explicit; a missing one could
    be an accident that silently drops protections). Golden tables live in `tests/`.
    """

    directory: Path

    NAMES = ("model.conf", "policy.csv", "constraints.toml", "limits.toml")

    @classmethod
    def in_dir(cls, directory: str | Path) -> PolicyFiles:
        return cls(Path(directory))

    @property
    def model(self) -> Path:
        return self.directory / "model.conf"

    @property
    def policy(self) -> Path:
        return self.directory / "policy.csv"

    @property
    def constraints(self) -> Path:
        return self.directory / "constraints.toml"

    @property
    def limits(self) -> Path:
        return self.directory / "limits.toml"

    @property
    def tests(self) -> Path:
        return self.directory / "tests"

    def read(self) -> dict[str, bytes]:
        """The bytes of each file, by name; raise `PolicyError` for a missing or unreadable one."""
        contents: dict[str, bytes] = {}
        problems: list[PolicyProblem] = []
        for name in self.NAMES:
            try:
                contents[name] = (self.directory / name).read_bytes()
            except OSError as exc:
                problems.append(
                    PolicyProblem(
                        name, 0, f"cannot read {self.directory / name}: {exc.strerror or exc}"
                    )
                )
        if problems:
            raise PolicyError(problems)
        return contents


def policy_version(contents: dict[str, bytes]) -> str:
    """SHA-256 over every file's name, length and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for name in PolicyFiles.NAMES:
        data = contents[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise fail(name, line, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


@dataclass(frozen=True, eq=False)
class Policy:
    """One loaded policy. Immutable: a reload builds a new one and swaps the reference.

    `version` is the SHA-256 of the files' contents; every `Decision` carries it. The decision
    cache belongs to the snapshot, so no decision can outlive the policy that made it.
    """

    files: PolicyFiles
    version: str
    sources: dict[str, str]
    model: AccessModel
    access: AccessIndex
    constraints: ConstraintSet
    limits: RateLimits
    cache: dict[tuple[Any, ...], Decision] = field(default_factory=dict, repr=False)

    def evaluate(
        self, subject: str, obj: str, action: str, canonical: str, tainted: bool = False
    ) -> Decision:
        """Decide without the cache: access rules, then argument constraints, then the taint
        rule (for a tainted request), then approvals.

        `canonical` is the request's arguments as canonical JSON; constraints are evaluated on
        its parsed form, so two requests with the same canonical arguments get the same answer.
        """
        version = self.version
        if not all(isinstance(x, str) and x for x in (subject, obj, action)):
            return Decision(
                "deny",
                "request",
                "subject, object and action must be non-empty strings",
                version,
                "request",
            )
        allow, deny = self.access.evaluate(subject, obj, action)
        if deny is not None:
            via = "" if deny.subject == subject else f" (as {deny.subject})"
            return Decision(
                "deny",
                deny.name,
                f"`{deny.text}` denies {subject}{via} {action} {obj}",
                version,
                "access",
            )
        if allow is None:
            return Decision(
                "deny",
                self.model.default_deny_rule,
                f"no rule in policy.csv lets {subject} {action} {obj}: denied by default",
                version,
                "access",
            )
        checks = self.constraints.checks.get(obj)
        approvals = self.constraints.approvals.get(obj)
        if checks or approvals:
            args = json.loads(canonical)
            failed = self.constraints.first_failure(obj, args)
            if failed is not None:
                check, reason = failed
                return Decision("deny", check.rule, f"{obj}: {reason}", version, "constraint")
        if tainted:
            taint = self.constraints.taint.get(obj)
            if taint is not None:
                effect: Effect = "deny" if taint.effect == "deny" else "approval_required"
                return Decision(effect, taint.rule, f"{obj}: {taint.reason}", version, "taint")
        if checks or approvals:
            args = json.loads(canonical)
            needed = self.constraints.first_approval(obj, args)
            if needed is not None:
                approval, reason = needed
                return Decision(
                    "approval_required", approval.rule, f"{obj}: {reason}", version, "approval"
                )
        via = "" if allow.subject == subject else f" (as {allow.subject})"
        return Decision(
            "allow",
            allow.name,
            f"`{allow.text}` lets {subject}{via} {action} {obj}",
            version,
            "access",
        )

    def casbin_enforcer(self) -> casbin.Enforcer:
        """A raw pycasbin enforcer over this snapshot's model.conf and policy.csv.

        Not used by decide(); it is the reference decide() is tested and benchmarked against.
        """
        import casbin
        from casbin.persist.adapter import (
            Adapter,
            load_policy_line,
        )

        policy_text = self.sources["policy.csv"]

        class _SnapshotAdapter(Adapter):  # type: ignore[misc]
            # Same per-line handling as pycasbin's FileAdapter (strip, then parse).
            def load_policy(self, model: Any) -> None:
                for line in policy_text.splitlines():
                    load_policy_line(line.strip(), model)

        model = casbin.Enforcer.new_model(text=self.sources["model.conf"])
        return casbin.Enforcer(model, _SnapshotAdapter())


def load_policy(directory: str | Path) -> Policy:
    """Read, validate and index the policy in `directory`.

    Raises `PolicyError` whose problems each read `file:line: reason` (line 0: the whole file).
    Every file is checked, so one error report lists the problems of all four.
    """
    files = PolicyFiles.in_dir(directory)
    raw = files.read()
    problems: list[PolicyProblem] = []
    texts: dict[str, str] = {}
    for name, data in raw.items():
        try:
            texts[name] = _decode(name, data)
        except PolicyError as exc:
            problems.extend(exc.located)
    parsed: dict[str, Any] = {}
    parsers = {
        "model.conf": parse_model,
        "policy.csv": parse_rules,
        "constraints.toml": parse_constraints,
        "limits.toml": parse_limits,
    }
    for name, parser in parsers.items():
        if name in texts:
            try:
                parsed[name] = parser(name, texts[name])
            except PolicyError as exc:
                problems.extend(exc.located)
    if problems:
        raise PolicyError(problems)
    rules, links = parsed["policy.csv"]
    return Policy(
        files=files,
        version=policy_version(raw),
        sources=texts,
        model=parsed["model.conf"],
        access=AccessIndex(rules, links),
        constraints=parsed["constraints.toml"],
        limits=parsed["limits.toml"],
    )
