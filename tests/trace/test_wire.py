"""The ingest's cheap check of published records agrees with the pydantic model it stands in for,
and refuses what the log must not store, saying why."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentd.trace import (
    DecisionRecord,
    RecordRejected,
    WireRecord,
    check_wire_record,
    parse_published,
)

from .conftest import make_record

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
_odd = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70), _json)
_field_values: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(st.from_regex(r"[0-9A-Za-z][0-9A-Za-z._:-]{0,12}", fullmatch=True), _odd),
    "ts": st.one_of(st.floats(), st.integers(), st.text(max_size=5)),
    "kind": st.sampled_from(["llm.call", "run.started", "x.billing", "x.", "nope", "run"]),
    "agent": _odd,
    "run_id": _odd,
    "decision": _odd,
    "reason": _odd,
    "inputs": _json,
    "outputs": _json,
    "attributes": st.one_of(_json, st.dictionaries(st.text(max_size=4), _json)),
    "lineage": st.one_of(
        _odd,
        st.dictionaries(st.sampled_from(["agent_version", "spec_hash", "bogus"]), _odd),
    ),
    "bogus": _odd,
}


_valid_base = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"[0-9A-Za-z][0-9A-Za-z._:-]{0,12}", fullmatch=True),
        "ts": st.floats(min_value=0, max_value=2e9),
        "kind": st.sampled_from(["llm.call", "run.started", "x.billing"]),
    }
)
_overrides = st.dictionaries(st.sampled_from(sorted(_field_values)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({k: _field_values[k] for k in keys})
)


@settings(max_examples=400, deadline=None)
@given(st.tuples(_valid_base, _overrides).map(lambda pair: {**pair[0], **pair[1]}))
def test_fast_check_accepts_only_what_the_model_accepts_with_the_same_values(
    fields: dict[str, Any],
) -> None:
    text = json.dumps(fields)
    fast = check_wire_record(text.encode())
    if fast is None:
        return
    record = DecisionRecord.from_wire(text)  # must not raise
    assert (fast.id, fast.ts, fast.kind, fast.agent, fast.run_id) == (
        record.id,
        record.ts,
        record.kind,
        record.agent,
        record.run_id,
    )
    assert fast.body == text == record.body_json()


def test_a_worker_record_takes_the_fast_path_verbatim_with_its_source() -> None:
    body = make_record(1, agent="echo", kind="run.started").body_json()
    checked = parse_published("echo", body.encode())
    assert isinstance(checked, WireRecord)
    assert checked.body == '{"source":"agent:echo",' + body[1:]
    assert checked.agent == "echo" and checked.id == "rec-000001"
    assert DecisionRecord.from_body(checked.body).source == "agent:echo"


def test_a_record_without_agent_gets_the_subjects_agent() -> None:
    body = make_record(2, kind="x.test.step").model_copy(update={"agent": None}).body_json()
    checked = parse_published("echo", body.encode())
    assert checked.agent == "echo"
    assert json.loads(checked.body_json())["agent"] == "echo"
    assert json.loads(checked.body_json())["source"] == "agent:echo"


@pytest.mark.parametrize("claimed", ["daemon", "agent:bank"])
def test_a_record_claiming_another_source_is_refused_on_both_paths(claimed: str) -> None:
    record = make_record(3, agent="echo", kind="run.started", source=claimed)
    fast = record.body_json().encode()
    slow = fast.replace(b'"id":', b'"reason":"a\\/b","id":', 1)  # an escape it re-serializes
    assert check_wire_record(fast) is not None and check_wire_record(slow) is None
    for data in (fast, slow):
        with pytest.raises(RecordRejected) as caught:
            parse_published("echo", data)
        assert f"claims source {claimed!r}" in caught.value.reason


def test_a_record_naming_its_own_source_is_stored_once_with_it() -> None:
    body = make_record(4, agent="echo", kind="run.started", source="agent:echo").body_json()
    checked = parse_published("echo", body.encode())
    assert checked.body_json() == body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "invalid record: record: Invalid JSON"),
        (b'{"id": "r1", "ts": 1.0}', "invalid record: kind: Field required"),
        (b'{"id": "r1", "ts": 1.0, "kind": "made.up"}', "unknown record kind 'made.up'"),
        (b'{"id": "r1", "ts": 1.0, "kind": "llm.call", "evil": 1}', "evil: Extra inputs"),
        (b'{"ts": 1.0, "kind": "llm.call"}', "no id: a published record must carry its id"),
        (b'{"id": "r1", "kind": "llm.call"}', "no ts: a published record must carry"),
        (b'{"id": "r1", "ts": 1.0, "kind": "llm.call", "agent": "bank"}', "names agent 'bank'"),
        (b"\xff\xfe", "invalid record"),
    ],
)
def test_unfit_records_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RecordRejected) as caught:
        parse_published("echo", data)
    assert reason in caught.value.reason


def test_the_pydantic_path_still_refuses_what_the_fast_path_declines() -> None:
    text = '{"id": "r1", "ts": "soon", "kind": "llm.call"}'
    assert check_wire_record(text) is None
    with pytest.raises(ValidationError):
        DecisionRecord.from_wire(text)


def test_the_source_goes_after_the_opening_brace_even_after_whitespace() -> None:
    body = " \n" + make_record(5, agent="echo", kind="run.finished").body_json()
    checked = parse_published("echo", body.encode())
    assert isinstance(checked, WireRecord)
    assert checked.body.startswith(' \n{"source":"agent:echo",')
    assert DecisionRecord.from_body(checked.body).source == "agent:echo"
