"""Secret redaction and payload digesting, applied before a record reaches the log.

`Redactor.redact` replaces every match of the configured patterns with "[REDACTED]" in every
string of a record that can carry free text: `inputs`, `outputs` and `attributes` (keys and values,
at any depth), `reason`, `rule`, `decision`, `operator`, the correlation ids and the lineage. Only
`id`, `ts` and `kind` are left alone: they are validated to a shape no secret takes.

Then each of `inputs`, `outputs` and `attributes` whose canonical JSON is larger than
`max_inline_bytes` is shrunk: inside it, the largest pieces (a long string, a big list or object)
are replaced by `{"digest": "sha256:<hex>", "size": N}`, where the digest is SHA-256 over the
piece's canonical JSON *after* redaction and N its size in bytes. The payload itself is NOT
stored anywhere: the log keeps only the digest, so whoever holds the original can prove it is the
one that was decided on (redact it with the same patterns, canonicalize, hash), but nobody can read
it back from the log. Redacting before digesting keeps a digest from confirming a guessed secret.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

from pydantic import JsonValue

from ._record import DecisionRecord, Lineage
from .verifier import canonical_json

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
_TEXT_FIELDS = (
    "agent",
    "replica",
    "run_id",
    "conversation_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "operator",
    "decision",
    "rule",
    "reason",
)
_PAYLOAD_FIELDS = ("inputs", "outputs", "attributes")


class Redactor:
    """Removes configured secrets from records and replaces oversized payloads by digests."""

    def __init__(
        self, patterns: Sequence[str | re.Pattern[str]] = (), *, max_inline_bytes: int = 16384
    ) -> None:
        if max_inline_bytes < 64:
            raise ValueError("max_inline_bytes must be at least 64 (a digest reference's size)")
        compiled = [re.compile(p) if isinstance(p, str) else p for p in patterns]
        for pattern in compiled:
            if pattern.search(""):
                raise ValueError(f"redaction pattern {pattern.pattern!r} matches the empty string")
        self.patterns: tuple[re.Pattern[str], ...] = tuple(compiled)
        self.max_inline_bytes = max_inline_bytes
        # One alternation scans a string once; patterns with their own global flags cannot be
        # joined, so those fall back to one pass each.
        self._joined: re.Pattern[str] | None = None
        if compiled:
            try:
                self._joined = re.compile("|".join(f"(?:{p.pattern})" for p in compiled))
            except re.error:
                self._joined = None

    def redact_text(self, text: str) -> str:
        """`text` with every secret match replaced."""
        if self._joined is not None:
            return self._joined.sub(REDACTED, text) if self._joined.search(text) else text
        for pattern in self.patterns:
            text = pattern.sub(REDACTED, text)
        return text

    def redact_value(self, value: JsonValue) -> JsonValue:
        """A JSON value with secrets replaced in every string and object key."""
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {self.redact_text(k): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_value(v) for v in value]
        return value

    def shrink(self, value: JsonValue) -> JsonValue:
        """Replace the parts of `value` that make it exceed `max_inline_bytes` by digests."""
        size = len(canonical_json(value))
        if size <= self.max_inline_bytes:
            return value
        if isinstance(value, dict):
            value = {k: self.shrink(v) for k, v in value.items()}
        elif isinstance(value, list):
            value = [self.shrink(v) for v in value]
        else:
            return _digest_ref(value)
        # Many small children can still add up: then the whole container goes.
        if len(canonical_json(value)) > self.max_inline_bytes:
            return _digest_ref(value)
        return value

    def redact(self, record: DecisionRecord) -> DecisionRecord:
        """The record with secrets replaced and large payloads digested (itself if clean)."""
        changes: dict[str, Any] = {}
        if self.patterns:
            for name in _TEXT_FIELDS:
                text = getattr(record, name)
                if text is not None and (new := self.redact_text(text)) != text:
                    changes[name] = new
            if record.lineage is not None:
                lineage = record.lineage.model_dump()
                cleaned = {k: self.redact_text(v) if v else v for k, v in lineage.items()}
                if cleaned != lineage:
                    changes["lineage"] = Lineage(**cleaned)
        for name in _PAYLOAD_FIELDS:
            value = getattr(record, name)
            if value is None:
                continue
            new_value = self.shrink(self.redact_value(value) if self.patterns else value)
            if new_value != value:
                changes[name] = new_value
        return record.model_copy(update=changes) if changes else record


def _digest_ref(value: JsonValue) -> dict[str, JsonValue]:
    data = canonical_json(value)
    return {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}
