"""The fields of a committed record that metrics read, whichever producer gave it.

The daemon's own records arrive as `DecisionRecord`s; records the trace ingest took from
replicas arrive as `WireRecord`s, which keep the JSON text a replica published and only the
indexed columns: their verdict and attributes are read from that text (one C-speed parse, about
as long as the counting itself), or taken from the ingest's own parse (`WireRecord.fields`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from agentd.trace import DecisionRecord, WireRecord

__all__ = ["RecordView", "view"]

_EMPTY: Mapping[str, Any] = {}

_loads: Callable[[str], Any]
try:
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with langgraph's dependencies
    _loads = json.loads


class RecordView(NamedTuple):
    kind: str
    agent: str | None
    decision: str | None
    rule: str | None
    reason: str | None
    ts: float
    source: str | None
    attributes: Mapping[str, Any]


def _text(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    return value if isinstance(value, str) else None


def view(record: DecisionRecord | WireRecord) -> RecordView:
    if isinstance(record, DecisionRecord):
        return RecordView(
            record.kind,
            record.agent,
            record.decision,
            record.rule,
            record.reason,
            record.ts,
            record.source,
            record.attributes or _EMPTY,
        )
    obj: Mapping[str, Any] | None = record.fields  # the ingest's own parse, when it kept it
    if obj is None:
        try:
            obj = _loads(record.body)
        except ValueError:  # checked by the ingest: cannot happen, and must not stop the count
            obj = _EMPTY
    if not isinstance(obj, dict):
        obj = _EMPTY
    attributes = obj.get("attributes")
    return RecordView(
        record.kind,
        record.agent,
        _text(obj, "decision"),
        _text(obj, "rule"),
        _text(obj, "reason"),
        record.ts,
        record.source,
        attributes if isinstance(attributes, dict) else _EMPTY,
    )
