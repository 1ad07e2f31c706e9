"""Secret redaction and payload digesting, applied before a record reaches the log.

`Redactor.redact` replaces every match of the configured patterns with "[REDACTED]" in every
string of a record that can carry free text: `inputs`, `outputs` and `attributes` (keys and values,
at any depth), `reason`, `rule`, `decision`, `operator`, the correlation ids and the lineage. Only
`id`, `ts` and `kind` are left alone: they are validated to a shape no secret takes.

When the record's body is larger than `max_inline_bytes`, each of `inputs`, `outputs` and
`attributes` that is larger on its own is shrunk: inside it, the pieces that make it too large (a
long string, a big list or object) are replaced by `{"digest": "sha256:<hex>", "size": N}`, where
the digest is SHA-256 over the piece's canonical JSON (`json.dumps` with sorted keys, no
whitespace, UTF-8) *after* redaction and N is that JSON's size in bytes. The payload itself is NOT
stored anywhere: the log keeps only the digest, so whoever holds the original can show it is the
one that was decided on (redact it with the same patterns, serialize, hash), but nobody can read
it back from the log. Redacting before digesting keeps a digest from confirming a guessed secret.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import JsonValue

from ._record import TEXT_FIELDS, DecisionRecord, Lineage

__all__ = ["REDACTED", "Redactor", "context_free"]

REDACTED = "[REDACTED]"
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
        self.scans_whole_text = all(context_free(p) for p in compiled)
        """True when every pattern can be searched over a whole record's (or span's) text at
        once: no match of any of them depends on what surrounds it (see `context_free`)."""

    def redact_text(self, text: str) -> str:
        """`text` with every secret match replaced."""
        for pattern in self.patterns:
            if pattern.search(text):
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
        text = record.body_json()
        secrets = bool(self.patterns) and not self._clean(text)
        if not secrets and len(text.encode("utf-8")) <= self.max_inline_bytes:
            return record
        changes: dict[str, Any] = {}
        if secrets:
            for name in TEXT_FIELDS:
                value = getattr(record, name)
                if value is not None and (new := self.redact_text(value)) != value:
                    changes[name] = new
            if record.lineage is not None:
                lineage = record.lineage.model_dump()
                cleaned = {k: self.redact_text(v) if v else v for k, v in lineage.items()}
                if cleaned != lineage:
                    changes["lineage"] = Lineage(**cleaned)
        for name in _PAYLOAD_FIELDS:
            payload = getattr(record, name)
            if payload is None:
                continue
            new_payload = self.shrink(self.redact_value(payload) if secrets else payload)
            if new_payload != payload:
                changes[name] = new_payload
        return record.model_copy(update=changes) if changes else record

    def leaves_unchanged(self, body: str) -> bool:
        """True when `redact` would return the record with this body as it is.

        Lets the log store a record received as text without building its model first.
        """
        if self.patterns and not self._clean(body):
            return False
        limit = self.max_inline_bytes
        return len(body) <= limit // 4 or len(body.encode()) <= limit

    def _clean(self, text: str) -> bool:
        """True when no string in the record behind the JSON `text` can hold a secret.

        Undoing the JSON escapes (a C-level codec round trip) leaves every string and key of the
        record verbatim in the text, each between two '"'. The codec knows every JSON escape but
        '\\/' and surrogate pairs, which bodies never hold (pydantic does not write them, and
        `DecisionRecord.from_wire` re-serializes text that has them). A pattern that does not
        look beyond its match (no anchors, no negative lookaround; \\b works, '"' being a
        non-word character like a string's edge) matches that text wherever it matches a
        string, so one scan replaces walking every string of the record.
        """
        if not self.scans_whole_text:
            return False
        if "\\" in text:
            text = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
        # One pattern after the other: an alternation of all of them scans slower in `re`.
        return not any(p.search(text) for p in self.patterns)


def context_free(pattern: re.Pattern[str]) -> bool:
    """Whether a match of `pattern` in a string can never depend on what surrounds the string.

    Then searching a text that holds the string verbatim between other characters (a record's
    JSON, a span's strings joined by newlines) finds every secret a search of the string alone
    finds. Anchors and negative lookaround break that ("secret(?!\\W)" matches "secret" alone
    but not `"secret"` in JSON), so does positive lookaround in principle; any of them makes the
    caller search string by string. Conservative: an anchor-like token anywhere counts.

    The one home of this rule: the log's redactor, the span redactor and the live decision feed
    all ask it (through `Redactor.scans_whole_text`), so they cannot disagree about a pattern.
    """
    source = pattern.pattern.replace("\\\\", "").replace("\\^", "").replace("\\$", "")
    source = source.replace("[^", "[")
    return not any(token in source for token in _CONTEXT_TOKENS)


_CONTEXT_TOKENS = ("^", "$", "\\A", "\\Z", "\\z", "(?<", "(?=", "(?!")


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: JsonValue) -> bytes:
    """The form a digested payload is hashed in: sorted keys, no whitespace, UTF-8."""
    return _CANONICAL.encode(value).encode("utf-8")


def _digest_ref(value: JsonValue) -> dict[str, JsonValue]:
    data = canonical_json(value)
    return {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data)}
