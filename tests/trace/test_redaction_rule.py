"""One rule decides when a secret may be searched for in a whole text at once, and the log, the
spans and the live feed all follow it: a secret that only a context-dependent pattern (an anchor,
a lookaround) finds is redacted by each of them.

The control: searching the record's JSON in one pass, the shortcut the rule allows only for
context-free patterns, misses that very secret, so each assertion here would fail if a consumer
took the shortcut for these patterns."""

from __future__ import annotations

import json
import re

import pytest
from nats.aio.client import Client
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentd.bus import Subjects
from agentd.daemon._decision_feed import DecisionFeed
from agentd.telemetry import RedactingSpanProcessor
from agentd.trace import DecisionRecord, Redactor, context_free

SECRET = "sk-" + "Q" * 24

CONTEXT_DEPENDENT = [
    r"^sk-Q+$",  # anchors: the string alone, not inside JSON
    r"\Ask-Q{24}\Z",
    r"(?<![\w\"])sk-Q{24}",  # negative lookbehind: a quote precedes it in JSON
    r"sk-Q{24}(?![\"\w])",  # negative lookahead: a quote follows it in JSON
]


@pytest.mark.parametrize("pattern", CONTEXT_DEPENDENT)
def test_the_one_shot_search_would_miss_the_secret(pattern: str) -> None:
    compiled = re.compile(pattern)
    assert compiled.search(SECRET)
    assert not compiled.search(json.dumps({"attributes": {"note": SECRET}}))
    assert not context_free(compiled)
    assert not Redactor([pattern]).scans_whole_text


@pytest.mark.parametrize("pattern", CONTEXT_DEPENDENT)
def test_log_spans_and_feed_all_redact_what_only_a_context_pattern_finds(pattern: str) -> None:
    redactor = Redactor([pattern])
    record = DecisionRecord(kind="tool.executed", agent="a", attributes={"note": SECRET})
    assert SECRET not in redactor.redact(record).model_dump_json()
    assert not redactor.leaves_unchanged(record.model_dump_json())

    feed = DecisionFeed(Client(), Subjects("agentd"), redactor)
    assert SECRET.encode() not in feed.summary(record)

    processor = RedactingSpanProcessor(SimpleSpanProcessor(InMemorySpanExporter()), redactor)
    span = processor.redact(ReadableSpan("call", attributes={"note": SECRET, "other": "x"}))
    assert SECRET not in repr(dict(span.attributes or {}))


@pytest.mark.parametrize(
    "pattern", [r"sk-[A-Za-z0-9]{24}", r"\bsk-Q+\b", r"token=[^\s\"]+", r"[^a-z]sk-Q{24}"]
)
def test_context_free_patterns_take_the_one_shot_path(pattern: str) -> None:
    assert Redactor([pattern]).scans_whole_text
