"""Redactor: secrets never reach the log; large payloads become digests."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from agentd.trace import REDACTED, DecisionRecord, Lineage, Redactor
from agentd.trace._redact import canonical_json

from .conftest import LogFactory

SECRET = "sk-" + "Q7x" * 10
OTHER_SECRET = "hunter2-deadbeef"
PATTERNS = [r"sk-[A-Za-z0-9]{20,}", r"hunter2-[0-9a-f]{8}"]


def secret_everywhere(i: int = 0) -> DecisionRecord:
    return DecisionRecord(
        kind="tool.executed",
        agent="researcher",
        operator=f"ops {OTHER_SECRET}",
        inputs={"api_key": SECRET, f"header {SECRET}": "x", "nested": [[{"deep": SECRET}]]},
        outputs=f"echo {SECRET} and {OTHER_SECRET}",
        reason=f"called with {SECRET}",
        rule=f"rule mentioning {OTHER_SECRET}",
        lineage=Lineage(prompt_hash=SECRET),
        attributes={"env": {"TOKEN": SECRET}, "n": i},
    )


def test_secrets_are_replaced_in_every_field() -> None:
    redacted = Redactor(PATTERNS).redact(secret_everywhere())
    body = redacted.body_json()
    assert SECRET not in body
    assert OTHER_SECRET not in body
    assert body.count(REDACTED) >= 9
    assert redacted.inputs == {
        "api_key": REDACTED,
        f"header {REDACTED}": "x",
        "nested": [[{"deep": REDACTED}]],
    }


def test_clean_records_are_returned_unchanged() -> None:
    record = DecisionRecord(kind="llm.call", inputs={"q": "nothing to hide\n"})
    assert Redactor(PATTERNS).redact(record) is record


def test_anchored_patterns_scan_each_string() -> None:
    # "^" binds to the start of each string, which a scan of the whole record would miss.
    redactor = Redactor([r"^token-\d+$"])
    record = DecisionRecord(kind="llm.call", inputs={"a": "token-123", "b": "my token-456"})
    assert redactor.redact(record).inputs == {"a": REDACTED, "b": "my token-456"}


def test_pattern_matching_empty_string_is_refused() -> None:
    with pytest.raises(ValueError, match="empty string"):
        Redactor([r"x*"])


_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
_SAMPLES = {
    r"sk-[A-Za-z0-9]{4,}": "sk-AbCd12",
    r"\bpw=\S+": "pw=x1",
    r"(?i)secret": "SeCrEt",
    r'a"b': 'a"b',
    r"x\ny": "x\ny",
    r"[^ ]+@corp": "bob@corp",
}


def _strings(record: DecisionRecord) -> list[str]:
    out: list[str] = [record.reason or ""]
    stack: list[object] = [record.inputs]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            out += list(value)
            stack += list(value.values())
        elif isinstance(value, list):
            stack += value
    return out


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.tuples(_text, st.booleans()), min_size=1, max_size=6),
    pattern=st.sampled_from(sorted(_SAMPLES)),
    wire=st.sampled_from(["python", "ascii-json", "utf8-json"]),
)
def test_whole_record_scan_never_misses_a_secret_in_a_string(
    pieces: list[tuple[str, bool]], pattern: str, wire: str
) -> None:
    strings = [text + (_SAMPLES[pattern] if planted else "") for text, planted in pieces]
    record = DecisionRecord(
        kind="llm.call", inputs={s: [s, {"k": s}] for s in strings[:2]}, reason=strings[-1]
    )
    if wire != "python":
        # As another language's JSON library might send it (\uXXXX escapes, escaped slashes).
        text = json.dumps(json.loads(record.body_json()), ensure_ascii=wire == "ascii-json")
        record = DecisionRecord.from_wire(text.replace("/", "\\/").encode())
    redactor = Redactor([pattern])
    compiled = re.compile(pattern)
    if any(compiled.search(s) for s in _strings(record)):
        assert not redactor._clean(record.body_json())
    assert not any(compiled.search(s) for s in _strings(redactor.redact(record)))


def test_large_payloads_are_kept_as_digests_only() -> None:
    big = "lorem ipsum " * 2000
    record = DecisionRecord(
        kind="llm.call",
        inputs={"prompt": big, "model": "tiny"},
        outputs=[f"token {i}" for i in range(3000)],
    )
    shrunk = Redactor([], max_inline_bytes=1024).redact(record)
    assert shrunk.inputs == {
        "prompt": {
            "digest": "sha256:" + hashlib.sha256(json.dumps(big).encode()).hexdigest(),
            "size": len(json.dumps(big)),
        },
        "model": "tiny",
    }
    assert isinstance(shrunk.outputs, dict)
    assert shrunk.outputs["digest"] == (
        "sha256:" + hashlib.sha256(canonical_json(record.outputs)).hexdigest()
    )
    assert "lorem" not in shrunk.body_json()
    assert len(shrunk.body_json()) < 1024


def test_digest_is_taken_after_redaction() -> None:
    payload: dict[str, JsonValue] = {"log": f"{SECRET} " + "x" * 5000}
    shrunk = Redactor(PATTERNS, max_inline_bytes=256).redact(
        DecisionRecord(kind="llm.call", inputs=payload)
    )
    expected = canonical_json(f"{REDACTED} " + "x" * 5000)
    assert isinstance(shrunk.inputs, dict)
    assert shrunk.inputs["log"] == {
        "digest": "sha256:" + hashlib.sha256(expected).hexdigest(),
        "size": len(expected),
    }


def test_configured_secret_never_reaches_the_sqlite_files(
    open_log: LogFactory, state_dir: Path
) -> None:
    log = open_log(redactor=Redactor(PATTERNS, max_inline_bytes=2048), checkpoint_every=10)
    records = [secret_everywhere(i) for i in range(40)]
    records.append(DecisionRecord(kind="llm.call", outputs=f"{SECRET} " + "y" * 10000))
    log.append_batch(records)
    found = log.find(conversation_id=None, kind="tool.executed")
    assert len(found) == 40
    proof = log.prove(records[5].id)
    assert SECRET not in proof.to_json()

    def raw_bytes() -> bytes:
        return b"".join(p.read_bytes() for p in state_dir.iterdir() if p.is_file())

    while_open = raw_bytes()
    assert b"decisions.db-wal" not in while_open  # sanity: we read contents, not names
    assert (state_dir / "decisions.db-wal").stat().st_size > 0
    assert REDACTED.encode() in while_open
    log.close()
    after_close = raw_bytes()
    for secret in (SECRET, OTHER_SECRET):
        for blob in (while_open, after_close):
            assert secret.encode() not in blob
            assert secret.encode("utf-16-le") not in blob


@pytest.mark.parametrize(
    ("wire", "pattern", "secret"),
    [
        ('{"kind":"llm.call","id":"w1","inputs":"https:\\/\\/u:pw@host"}', r"u:pw@host", "u:pw@"),
        ('{"kind":"llm.call","id":"w2","reason":"key \\ud83d\\udd11-42"}', "\U0001f511-42", "-42"),
        ('{"kind":"llm.call","id":"w3","reason":"line\\nsk-AAAA1111"}', r"sk-[A-Z0-9]{8}", "sk-"),
    ],
)
def test_secrets_in_escaped_wire_text_are_found(wire: str, pattern: str, secret: str) -> None:
    record = DecisionRecord.from_wire(wire.encode())
    redacted = Redactor([pattern]).redact(record)
    assert secret not in json.dumps(json.loads(redacted.body_json()), ensure_ascii=False)
    assert REDACTED in redacted.body_json()
