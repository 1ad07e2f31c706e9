"""Secrets never leave the process in a span: a processor that redacts before export.

`RedactingSpanProcessor` sits in front of the exporting processor. When a span ends it checks
every string the span carries (its name, attribute values, event names and attributes, link
attributes, the status description) against the configured patterns and, if one matches,
hands the exporter a copy with each match replaced by "[REDACTED]" (the decision log's
`Redactor` and its patterns). A clean span is passed on as it is, so the usual cost is one
regex scan per string attribute, paid only when export is on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import AttributeValue

from agentd.trace import Redactor

__all__ = ["RedactingSpanProcessor"]


class RedactingSpanProcessor(SpanProcessor):
    """Passes ended spans to `inner` with configured secrets replaced."""

    def __init__(self, inner: SpanProcessor, redactor: Redactor) -> None:
        self._inner = inner
        self._redactor = redactor
        # A pattern that cannot see beyond its match finds a secret in the strings joined by
        # newlines wherever it finds one in a string (a match across two strings only costs a
        # needless copy): one scan per pattern instead of one per string.
        self._scan_joined = redactor.scans_whole_text

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._inner.on_end(self.redact(span) if self._redactor.patterns else span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)

    def redact(self, span: ReadableSpan) -> ReadableSpan:
        """`span` itself when no string in it holds a secret, else a redacted copy."""
        status = span.status
        strings = [span.name, status.description or ""]
        strings += _strings(span.attributes)
        for event in span.events:
            strings.append(event.name)
            strings += _strings(event.attributes)
        for link in span.links:
            strings += _strings(link.attributes)
        if not self._dirty(strings):
            return span
        text = self._redactor.redact_text
        return ReadableSpan(
            name=text(span.name),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=self._attributes(span.attributes),
            events=[
                Event(text(e.name), self._attributes(e.attributes), e.timestamp)
                for e in span.events
            ],
            links=[Link(link.context, self._attributes(link.attributes)) for link in span.links],
            kind=span.kind,
            status=Status(status.status_code, text(status.description or "") or None),
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _dirty(self, strings: list[str]) -> bool:
        patterns = self._redactor.patterns
        if self._scan_joined:
            text = "\n".join(strings)
            return any(p.search(text) for p in patterns)
        return any(p.search(s) for s in strings for p in patterns)

    def _attributes(
        self, attributes: Mapping[str, AttributeValue] | None
    ) -> dict[str, AttributeValue]:
        return {k: self._value(v) for k, v in (attributes or {}).items()}

    def _value(self, value: AttributeValue) -> AttributeValue:
        text = self._redactor.redact_text
        if isinstance(value, str):
            return text(value)
        if isinstance(value, Sequence) and value and isinstance(value[0], str):
            return tuple(text(str(v)) for v in value)
        return value


def _strings(attributes: Mapping[str, Any] | None) -> list[str]:
    found: list[str] = []
    for value in (attributes or {}).values():
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, str))
    return found
