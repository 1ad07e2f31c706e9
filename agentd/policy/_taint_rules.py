"""`[[taint]]` rules of constraints.toml: what a tainted run may not do, or only with a person.

A run is tainted once it has received content from a tool declared untrusted (http.fetch, web
search, mail; see agentd/tools/README.md, "Taint"), directly or through a message from a
tainted run. The tool gateway passes that fact as `Request.tainted`; these rules decide what it
means for a tool:

    [[taint]]
    tool = "loan.approve"
    effect = "deny"        # deny: a tainted run may not call it; approve: a person must approve

Rule names are `constraints.toml:LINE [tool] tainted EFFECT`, LINE being the line of `effect`.
One rule per tool. An untainted call is not affected; a tainted call of a tool with no rule is
decided as any other call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ._errors import PolicyProblem
from ._toml_entries import TomlEntry, validate_entry

__all__ = ["TaintRule", "parse_taint_rules"]

_TOOL = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class _TaintEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    tool: str
    effect: Literal["deny", "approve"]


@dataclass(frozen=True)
class TaintRule:
    """What a tainted call of `tool` gets: denied, or parked for a person's approval."""

    rule: str
    line: int
    tool: str
    effect: Literal["deny", "approve"]

    @property
    def reason(self) -> str:
        what = "may not call" if self.effect == "deny" else "needs approval to call"
        return f"a run tainted by untrusted content {what} {self.tool}"


def parse_taint_rules(
    file: str, entries: list[TomlEntry], problems: list[PolicyProblem]
) -> Mapping[str, TaintRule]:
    """The rules by object (`tool:<name>`); problems (file:line) appended to `problems`."""
    rules: dict[str, TaintRule] = {}
    for entry in entries:
        parsed = validate_entry(file, entry, _TaintEntry, problems)
        if parsed is None:
            continue
        if not _TOOL.fullmatch(parsed.tool):
            problems.append(
                PolicyProblem(
                    file,
                    entry.line_of("tool"),
                    f"tool {parsed.tool!r} is not a tool name "
                    "(letters, digits, _ - and dots; no wildcards)",
                )
            )
            continue
        obj = f"tool:{parsed.tool}"
        other = rules.get(obj)
        if other is not None:
            problems.append(
                PolicyProblem(
                    file,
                    entry.line_of("tool"),
                    f"a second [[taint]] rule for {parsed.tool}; the first is {other.rule} "
                    f"(line {other.line}: its effect): one rule per tool",
                )
            )
            continue
        line = entry.line_of("effect")
        name = f"{file}:{line} [{parsed.tool}] tainted {parsed.effect}"
        rules[obj] = TaintRule(name, line, parsed.tool, parsed.effect)
    return rules
