"""The live decision feed behind `agentctl trace --follow`: committed records on
`<prefix>.evt.decision`.

Each message is a compact summary of one committed record: every field except the payloads
(`inputs`, `outputs`), with the configured secret patterns redacted; its id, run and trace
fetch the full story (`agentctl trace ID`). Core NATS, at most once: a follower that falls
behind or disconnects misses summaries, never the log. Agent filtering happens in the follower
(one subject keeps the daemon's publish cost flat however many follow).

Every record the log stores reaches the feed, whichever producer gave it: the daemon's own
(`DecisionRecord`s) and those the trace ingest took from replicas (`WireRecord`s, whose fields
are read from the text the replica published).

Cost matters here: every committed record passes through on the event loop. The summary is
built from the record's fields directly and redacted by one scan of its JSON text; only text
that may hold a secret (a pattern matches, or JSON escapes could hide one) takes the slow path
through `Redactor.redact_value`. Summaries whose attributes exceed the log's inline limit go
without them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client

from agentd.bus import Subjects
from agentd.trace import DecisionRecord, Redactor, WireRecord

__all__ = ["DecisionFeed"]

log = logging.getLogger("agentd.trace")

FEED_KIND = "decision"
_FIELDS = tuple(
    name for name in DecisionRecord.model_fields if name not in {"inputs", "outputs", "lineage"}
)
_PAYLOADS = ("inputs", "outputs")

try:
    import orjson
except ImportError:  # pragma: no cover - orjson comes with langgraph's dependencies
    orjson = None  # type: ignore[assignment]


def _dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept: orjson (several times faster: every record the log
    stores passes here), or the standard library for what orjson refuses (integers beyond 64
    bits)."""
    if orjson is not None:
        try:
            return orjson.dumps(value).decode()
        except TypeError:
            pass
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class DecisionFeed:
    """A recorder observer that publishes a summary of every committed record."""

    def __init__(self, nc: Client, subjects: Subjects, redactor: Redactor) -> None:
        self._nc = nc
        self._subject = subjects.event(FEED_KIND)
        self._redactor = redactor
        self._patterns = redactor.patterns
        # a pattern whose match depends on what surrounds it cannot be checked on the JSON text
        self._scan_text = redactor.scans_whole_text

    def summary(self, record: DecisionRecord | WireRecord) -> bytes:
        """The JSON summary published for `record`."""
        fields: dict[str, Any] = {}
        if isinstance(record, WireRecord):
            body: Any = record.fields  # the ingest's own parse of the text
            if body is None:
                try:
                    body = json.loads(record.body)
                except ValueError:  # checked by the ingest: cannot happen
                    body = {}
            if isinstance(body, dict):
                fields = dict(body)  # a copy: the parse is shared with the other observers
                for name in _PAYLOADS:
                    fields.pop(name, None)
            for name in ("id", "kind", "agent", "source"):  # the checked values
                value = getattr(record, name)
                if value is not None:
                    fields[name] = value
        else:
            for name in _FIELDS:
                value = getattr(record, name)
                if value is not None:
                    fields[name] = value
            if record.lineage is not None:
                fields["lineage"] = record.lineage.model_dump(exclude_none=True)
        text = _dumps(fields)
        if len(text) > self._redactor.max_inline_bytes and "attributes" in fields:
            del fields["attributes"]
            text = _dumps(fields)
        if self._patterns and (
            not self._scan_text or "\\" in text or any(p.search(text) for p in self._patterns)
        ):
            text = _dumps(self._redactor.redact_value(fields))
        return text.encode()

    async def __call__(self, records: Sequence[DecisionRecord | WireRecord]) -> None:
        if not self._nc.is_connected:
            return
        for record in records:
            await self._nc.publish(self._subject, self.summary(record))
