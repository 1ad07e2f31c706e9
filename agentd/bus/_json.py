"""JSON from the outside, parsed within bounds: its size and its nesting depth are checked
before the parser sees it.

Every handler of a subject the daemon serves reads JSON that hostile code may have written.
`json.loads` recurses once per `[` or `{`: a payload of 100 KB of `[` raises RecursionError (not
ValueError) deep inside the parser, and a handler that does not expect it dies with its task
group. `loads_bounded` refuses such input first, with an error that says what and where, and is
the one parser the daemon's handlers use.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "BoundedJSONError", "json_depth", "loads_bounded"]

MAX_JSON_DEPTH = 64
# a JSON string literal (the unrolled form: no backtracking per character)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_KEEP_BRACKETS = bytes(range(256)).translate(None, b"[]{}")


class BoundedJSONError(ValueError):
    """A payload refused before or while parsing it; the message says what was wrong."""


def json_depth(data: bytes, stop_after: int | None = None) -> int:
    """The deepest nesting of `[` and `{` in `data` (brackets inside strings do not count),
    found without parsing. With `stop_after`, returns as soon as the depth exceeds it, so an
    attack of a million `[` costs `stop_after` steps, not a million."""
    brackets = _STRING.sub(b"", data).translate(None, _KEEP_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_after is not None and deepest > stop_after:
                    return deepest
        else:
            depth -= 1
    return deepest


def loads_bounded(
    data: bytes | str,
    *,
    what: str,
    max_bytes: int,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """Parse `data` as JSON, or raise BoundedJSONError naming `what` (e.g. "the spawn request
    on agentd.spawn.alpha"): over `max_bytes`, nested deeper than `max_depth`, or not JSON."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise BoundedJSONError(f"{what} is {len(raw)} bytes; the limit is {max_bytes} bytes")
    depth = json_depth(raw, stop_after=max_depth)
    if depth > max_depth:
        raise BoundedJSONError(
            f"{what} nests arrays/objects deeper than the limit of {max_depth} levels"
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BoundedJSONError(f"{what} is not valid JSON: {exc}") from None
