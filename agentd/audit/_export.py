"""Export of a time range in pages, so a large range streams instead of filling one reply.

Each page is read through its own read-only connection (the daemon's writer is never held up)
and resumes after the last seq of the page before, so pages neither repeat nor skip a record
even while the daemon appends. A line is the one `agentd.trace.export_lines` (and so
`DecisionLog.export`) writes.
"""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from agentd.trace import export_lines

__all__ = ["ExportPage", "export_page"]

DEFAULT_PAGE_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class ExportPage:
    """JSON lines of one page; `next_after` is the cursor of the next page (None: done)."""

    lines: list[str]
    next_after: int | None


def export_page(
    path: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    after_seq: int = 0,
    max_bytes: int = DEFAULT_PAGE_BYTES,
) -> ExportPage:
    """Records with `since <= ts < until` and `seq > after_seq`, oldest first, until about
    `max_bytes` of lines (at least one line per page, however large)."""
    lines: list[str] = []
    size = 0
    with closing(export_lines(path, since=since, until=until, after_seq=after_seq)) as source:
        for text in source:
            if lines and size + len(text) > max_bytes:
                return ExportPage(lines, int(json.loads(lines[-1])["seq"]))
            lines.append(text)
            size += len(text) + 1
    return ExportPage(lines, None)
