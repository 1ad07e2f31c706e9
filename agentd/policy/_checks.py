"""The vocabulary of argument checks: how each constraints.toml operator judges a JSON value.

Pure functions of a value and an operand; no eval. Numbers are ints or finite floats, never bools;
equality is by JSON type (`1` is not `true`, `"1"` is not `1`, `1` equals `1.0`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

MISSING: Any = object()  # the value of an absent argument


def is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not isinstance(value, float) or math.isfinite(value)


def same_value(a: object, b: object) -> bool:
    """Equality by JSON type: `1` is not `true`, `"1"` is not `1`, `1` equals `1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if is_number(a) and is_number(b):
        return a == b
    return isinstance(a, str) and isinstance(b, str) and a == b


def url_host(value: object) -> tuple[str | None, str]:
    """The lower-case host of an http(s) URL, or None and why it is not acceptable."""
    if not isinstance(value, str):
        return None, "is not a string URL"
    if any(c.isspace() or ord(c) < 0x20 or c == "\\" for c in value):
        return None, "contains whitespace, control characters or backslashes"
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        return None, f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return None, f"has scheme {parts.scheme!r}, not http or https"
    if "@" in parts.netloc:
        return None, "carries user info (`user@host`)"
    if not parts.hostname:
        return None, "has no host"
    return parts.hostname, ""


def describe(values: list[Any]) -> str:
    return json.dumps(values)


# Each check returns None when the value passes, else the reason it fails.
Check = Callable[[Any, Any], str | None]


def _check_required(value: Any, _: Any) -> str | None:
    return "is required but absent" if value is MISSING else None


def _check_min(value: Any, bound: Any) -> str | None:
    if not is_number(value):
        return f"= {json.dumps(value, default=repr)} is not a finite number"
    return None if value >= bound else f"= {value} is below the minimum {bound}"


def _check_max(value: Any, bound: Any) -> str | None:
    if not is_number(value):
        return f"= {json.dumps(value, default=repr)} is not a finite number"
    return None if value <= bound else f"= {value} exceeds the maximum {bound}"


def _check_one_of(value: Any, allowed: Any) -> str | None:
    if any(same_value(value, a) for a in allowed):
        return None
    return f"= {json.dumps(value, default=repr)} is not one of {describe(allowed)}"


def _check_host_in(value: Any, hosts: Any) -> str | None:
    host, why = url_host(value)
    if host is None:
        return f"= {json.dumps(value, default=repr)} {why}"
    return None if host in hosts else f"host {host!r} is not in {describe(sorted(hosts))}"


def _check_regex(value: Any, pattern: Any) -> str | None:
    if not isinstance(value, str):
        return "is not a string"
    return None if pattern.fullmatch(value) else f"does not match /{pattern.pattern}/"


def _check_not_regex(value: Any, pattern: Any) -> str | None:
    if not isinstance(value, str):
        return "is not a string"
    found = pattern.search(value)
    if found is None:
        return None
    return f"contains {found.group(0)!r}, forbidden by /{pattern.pattern}/"


def _check_max_length(value: Any, limit: Any) -> str | None:
    if not isinstance(value, str | list):
        return "is neither a string nor a list"
    return None if len(value) <= limit else f"has length {len(value)}, more than {limit}"


CHECKS: dict[str, tuple[Check, Callable[[Any], str]]] = {
    "required": (_check_required, lambda _: "is required"),
    "min": (_check_min, lambda n: f">= {n}"),
    "max": (_check_max, lambda n: f"<= {n}"),
    "one_of": (_check_one_of, lambda v: f"in {describe(v)}"),
    "host_in": (_check_host_in, lambda v: f"host in {describe(sorted(v))}"),
    "regex": (_check_regex, lambda p: f"matches /{p.pattern}/"),
    "not_regex": (_check_not_regex, lambda p: f"does not match /{p.pattern}/"),
    "max_length": (_check_max_length, lambda n: f"length <= {n}"),
}


def lookup(args: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    """The value at a dotted path in the arguments, or the `MISSING` sentinel."""
    value: Any = args if args is not None else {}
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value
