"""DecisionRecord: validation, ids, the stored body."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from agentd.trace import RECORD_KINDS, DecisionRecord, Lineage, new_record_id


def test_record_ids_are_uuid7_and_sort_in_creation_order() -> None:
    ids = [new_record_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_defaults_fill_id_and_time() -> None:
    record = DecisionRecord(kind="llm.call")
    assert uuid.UUID(record.id).version == 7
    assert record.ts > 1.7e9


@pytest.mark.parametrize("kind", sorted(RECORD_KINDS) + ["x.billing.charged"])
def test_known_and_extension_kinds_validate(kind: str) -> None:
    assert DecisionRecord(kind=kind).kind == kind


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "tool.exploded"},
        {"kind": "x."},
        {"kind": "llm.call", "id": ""},
        {"kind": "llm.call", "id": "has space"},
        {"kind": "llm.call", "ts": float("nan")},
        {"kind": "llm.call", "surprise": 1},
        {"kind": "llm.call", "decision": "x" * 65},
        {"kind": "llm.call", "lineage": {"model_id": "m", "extra": 1}},
    ],
)
def test_invalid_records_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DecisionRecord.model_validate(fields)


def test_body_leaves_out_none_fields_but_keeps_nulls_inside_payloads() -> None:
    record = DecisionRecord(
        kind="tool.denied",
        agent="a",
        inputs={"q": None, "n": [1, 2.5]},
        lineage=Lineage(model_id="m1"),
    )
    body = json.loads(record.body_json())
    assert "run_id" not in body
    assert body["inputs"] == {"q": None, "n": [1, 2.5]}
    assert body["lineage"] == {"model_id": "m1"}
    assert DecisionRecord.from_body(record.body_json()) == record


def test_from_wire_keeps_the_received_text_as_body() -> None:
    wire = '{"kind": "llm.call", "id": "abc", "ts": 5, "outputs": {"b": 1, "a": 2}}'
    record = DecisionRecord.from_wire(wire.encode())
    assert record.body_json() == wire
    assert record.ts == 5.0


def test_from_wire_reserializes_non_standard_numbers() -> None:
    wire = '{"kind": "llm.call", "id": "abc", "ts": 5, "outputs": {"score": NaN}}'
    record = DecisionRecord.from_wire(wire)
    body = record.body_json()
    assert body != wire
    assert json.loads(body)["outputs"] == {"score": None}


def test_unserializable_record_fails_with_its_id() -> None:
    record = DecisionRecord(kind="llm.call", id="r1", reason="lone \ud800 surrogate")
    with pytest.raises(ValueError, match="r1"):
        record.body_json()


def test_model_copy_revalidates_and_reserializes() -> None:
    record = DecisionRecord(kind="llm.call", agent="a")
    assert '"agent":"a"' in record.body_json()
    copy = record.model_copy(update={"agent": "b"})
    assert '"agent":"b"' in copy.body_json()
    with pytest.raises(ValidationError):
        record.model_copy(update={"kind": "nope"})
