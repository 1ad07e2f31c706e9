"""Server-sent events of a streamed completion, as the relay needs them.

`UsageStripper` removes the usage-only chunk (`"choices": []` with `usage`) that the gateway
asked upstream for when the caller did not: the gateway needs the real usage to settle the
budget, the caller gets exactly the stream it asked for (the common client loop reads
`chunk.choices[0]` and fails on an empty list). Events pass through as the same bytes; only
complete events are forwarded, so a usage chunk split across two reads is still recognised, and
only events holding the bytes `"usage"` are parsed. vLLM writes one whole event per read, so
holding back an incomplete event delays nothing.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["UsageStripper", "is_usage_only"]

_EVENT_END = b"\n\n"
_USAGE_KEY = b'"usage"'


def is_usage_only(chunk: Any) -> bool:
    """A parsed stream chunk that carries usage and no choice (the last one of a stream with
    `stream_options.include_usage`)."""
    return (
        isinstance(chunk, dict)
        and chunk.get("choices") == []
        and isinstance(chunk.get("usage"), dict)
    )


class UsageStripper:
    """Feed upstream bytes in order; forward what `feed` and then `flush` return."""

    __slots__ = ("_pending", "stripped")

    def __init__(self) -> None:
        self._pending = b""
        self.stripped = 0

    def feed(self, data: bytes) -> bytes:
        """The complete events of `data` (after what was held back), usage-only ones removed;
        an incomplete last event is held back until its end arrives."""
        if self._pending:
            data = self._pending + data
        end = data.rfind(_EVENT_END)
        if end < 0:
            self._pending = data
            return b""
        end += len(_EVENT_END)
        complete, self._pending = data[:end], data[end:]
        if _USAGE_KEY not in complete:
            return complete
        return self._filter(complete)

    def flush(self) -> bytes:
        """What is left at the end of the stream (an event without its blank line)."""
        rest, self._pending = self._pending, b""
        if _USAGE_KEY not in rest:
            return rest
        return self._filter(rest)

    def _filter(self, events: bytes) -> bytes:
        kept = []
        for event in events.split(_EVENT_END):
            if event and _USAGE_KEY in event and is_usage_only(_event_data(event)):
                self.stripped += 1
                continue
            kept.append(event)
        return _EVENT_END.join(kept)


def _event_data(event: bytes) -> Any:
    """The JSON of an event's `data:` field(s), or None."""
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    try:
        return json.loads(b"\n".join(lines))
    except ValueError:
        return None
