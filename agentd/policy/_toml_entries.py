"""Read `[[table]]` entries from a TOML file and remember the line of every key.

tomllib returns plain dicts without positions, but every error in a policy file must name its line.
The policy TOML files are lists of flat entries (`[[constraint]]`, `[[limit]]`, `[[case]]`), so a
scan of the raw text for `[[name]]` headers and `key =` lines recovers the positions; the scan is
checked against what tomllib parsed, and a file written in another TOML style (inline arrays of
tables, dotted keys) is rejected rather than mislocated.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ._errors import PolicyError, PolicyProblem, fail

_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_-]+)\s*\]\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")
_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*[\].]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")

M = TypeVar("M", bound=BaseModel)

# Pydantic names one error per member of a union (int | float); say what is wanted instead.
_EXPECTED = {
    "int_type": "must be a number",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an inline table { ... }",
}


@dataclass(frozen=True)
class TomlEntry:
    """One `[[table]]` entry: its values, the line of its header and of each of its keys."""

    table: str
    line: int
    values: Mapping[str, Any]
    key_lines: Mapping[str, int] = field(default_factory=dict)

    def line_of(self, key: object) -> int:
        """The line of `key` in this entry, or the header line when the key is not written."""
        return self.key_lines.get(key, self.line) if isinstance(key, str) else self.line


def read_toml_entries(file: str, text: str, tables: Collection[str]) -> dict[str, list[TomlEntry]]:
    """Parse `text` as a file of `[[table]]` entries, one list per allowed table name.

    Raises `PolicyError` (file:line: reason) on a TOML syntax error, on a top-level key or table
    other than `tables`, and on entries that are not written as `[[table]]` blocks.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION.search(str(exc))
        line = int(match.group(1)) if match else 0
        reason = _TOML_POSITION.sub("", str(exc)).strip()
        raise fail(file, line, f"TOML syntax error: {reason}") from None

    headers: list[tuple[str, int, dict[str, int]]] = []
    current: dict[str, int] | None = None
    top_level: dict[str, int] = {}
    table_lines: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw)
        if header:
            current = {}
            headers.append((header.group(1), number, current))
            continue
        table = _TABLE.match(raw)
        if table:
            table_lines.setdefault(table.group(1), number)
        if table or _ANY_HEADER.match(raw):
            current = None
            continue
        key = _KEY.match(raw)
        if key:
            target = current if current is not None else top_level
            target.setdefault(key.group(1), number)

    problems: list[PolicyProblem] = []
    for name, value in data.items():
        if name not in tables:
            line = (
                top_level.get(name)
                or table_lines.get(name)
                or next((h[1] for h in headers if h[0] == name), 1)
            )
            allowed = ", ".join(f"[[{t}]]" for t in sorted(tables))
            problems.append(
                PolicyProblem(
                    file, line, f"unknown table or key {name!r}; this file holds only {allowed}"
                )
            )
        elif not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            line = top_level.get(name, 1)
            problems.append(
                PolicyProblem(file, line, f"{name!r} must be written as [[{name}]] tables")
            )
    if problems:
        raise PolicyError(problems)

    result: dict[str, list[TomlEntry]] = {name: [] for name in tables}
    for name in tables:
        parsed: list[dict[str, Any]] = data.get(name, [])
        located = [(line, keys) for (table, line, keys) in headers if table == name]
        if len(located) != len(parsed):
            raise fail(
                file,
                located[0][0] if located else 1,
                f"write each {name} as its own [[{name}]] block with one `key = value` per "
                "line (inline tables and dotted keys cannot be located)",
            )
        for (line, keys), values in zip(located, parsed, strict=True):
            if set(values) - set(keys):
                missing = sorted(set(values) - set(keys))
                raise fail(
                    file,
                    line,
                    f"keys {missing} are not written as `key = value` lines "
                    f"in this [[{name}]] block",
                )
            result[name].append(TomlEntry(name, line, values, keys))
    return result


def validate_entry(
    file: str, entry: TomlEntry, model: type[M], problems: list[PolicyProblem]
) -> M | None:
    """Validate one entry with a strict pydantic model; append located problems on failure."""
    try:
        return model.model_validate(dict(entry.values))
    except ValidationError as exc:
        reported: set[object] = set()
        for error in exc.errors():
            loc = error["loc"]
            key = loc[0] if loc else None
            if key in reported:  # a union reports once per member type: keep the first
                continue
            reported.add(key)
            expected = _EXPECTED.get(error["type"])
            if expected is not None:
                problems.append(PolicyProblem(file, entry.line_of(key), f"{key}: {expected}"))
                continue
            where = ".".join(str(part) for part in loc) or f"[[{entry.table}]]"
            if error["type"] == "extra_forbidden":
                message = f"unknown field {where!r} in [[{entry.table}]]"
            elif error["type"] == "missing":
                message = f"[[{entry.table}]] needs {where!r}"
            else:
                message = f"{where}: {error['msg']}"
            problems.append(PolicyProblem(file, entry.line_of(key), message))
        return None
