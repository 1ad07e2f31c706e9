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
import re
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
# a pattern whose match depends on what surrounds it cannot be checked on the JSON text
_CONTEXT = re.compile(r"\^|\$|\\A|\\Z|\(\?[=!<]")


class DecisionFeed:
    """A recorder observer that publishes a summary of every committed record."""

    def __init__(self, nc: Client, subjects: Subjects, redactor: Redactor) -> None:
        self._nc = nc
        self._subject = subjects.event(FEED_KIND)
        self._redactor = redactor
        self._patterns = redactor.patterns
        self._scan_text = not any(_CONTEXT.search(p.pattern) for p in self._patterns)

    def summary(self, record: DecisionRecord | WireRecord) -> bytes:
        """The JSON summary published for `record`."""
        fields: dict[str, Any] = {}
        if isinstance(record, WireRecord):
            try:
                body = json.loads(record.body)
            except ValueError:  # checked by the ingest: cannot happen
                body = {}
            if isinstance(body, dict):
                fields = {k: v for k, v in body.items() if k not in _PAYLOADS and v is not None}
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
        text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        if len(text) > self._redactor.max_inline_bytes and "attributes" in fields:
            del fields["attributes"]
            text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
        if self._patterns and (
            not self._scan_text or "\\" in text or any(p.search(text) for p in self._patterns)
        ):
            text = json.dumps(
                self._redactor.redact_value(fields), separators=(",", ":"), ensure_ascii=False
            )
        return text.encode()

    async def __call__(self, records: Sequence[DecisionRecord | WireRecord]) -> None:
        if not self._nc.is_connected:
            return
        for record in records:
            await self._nc.publish(self._subject, self.summary(record))
