"""The live decision feed behind `agentctl trace --follow`: committed records on
`<prefix>.evt.decision`.

Each message is a compact summary of one committed record: every field except the payloads
(`inputs`, `outputs`), with the configured secret patterns redacted; its id, run and trace
fetch the full story (`agentctl trace ID`). Core NATS, at most once: a follower
that falls behind or disconnects misses summaries, never the log. Agent filtering happens in
the follower (one subject keeps the daemon's publish cost flat however many follow).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from nats.aio.client import Client

from agentd.bus import Subjects
from agentd.trace import DecisionRecord, Redactor

__all__ = ["DecisionFeed"]

log = logging.getLogger("agentd.trace")

FEED_KIND = "decision"
_PAYLOADS = {"inputs", "outputs"}


class DecisionFeed:
    """A recorder observer that publishes a summary of every committed record."""

    def __init__(self, nc: Client, subjects: Subjects, redactor: Redactor) -> None:
        self._nc = nc
        self._subject = subjects.event(FEED_KIND)
        self._redactor = redactor

    async def __call__(self, records: Sequence[DecisionRecord]) -> None:
        if not self._nc.is_connected:
            return
        for record in records:
            summary = record.model_dump(
                mode="json", exclude_none=True, exclude={"inputs", "outputs"}
            )
            body = json.dumps(self._redactor.redact_value(summary), separators=(",", ":"))
            await self._nc.publish(self._subject, body.encode())
