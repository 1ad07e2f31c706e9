"""Points in time as operators type them: epoch seconds, ISO 8601, or an age such as `2h`."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

__all__ = ["parse_when"]

_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_when(text: str, *, now: float | None = None) -> float:
    """Epoch seconds for `text`: `1764140000.5`, `2026-11-26T07:00:00Z` (no zone: UTC) or an age
    before now (`90s`, `15m`, `2h`, `7d`, `1w`). Raises ValueError saying what is accepted."""
    value = text.strip()
    age = _AGE.match(value)
    if age:
        start = time.time() if now is None else now
        return start - float(age.group(1)) * _UNIT_S[age.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give epoch seconds, ISO 8601 (2026-11-26T07:00:00Z)"
            " or an age such as 15m, 2h, 7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
