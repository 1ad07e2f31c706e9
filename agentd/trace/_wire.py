"""Records as they arrive from workers: checked cheaply, stored verbatim, refused with a reason.

The daemon's ingest receives each record as the JSON text a worker published. Building a
pydantic `DecisionRecord` from it costs about 16 us for a 1 KB record here (most of it walking
`inputs` and `outputs` as `JsonValue`s), more than writing it to the log. `check_wire_record`
does the same checks on the result of `json.loads` (C code) for the common shape and returns a
`WireRecord`: the columns the log indexes plus the text, which the log hashes verbatim. It only
ever *accepts* text that `DecisionRecord` would accept with the same field values (a property
test holds it to that); anything unusual (escapes the log re-serializes, numbers given as
strings, a missing id) answers None and `parse_published` lets pydantic decide and explain.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from pydantic import ValidationError

from agentd.errors import AgentdError

from ._record import (
    _EXTENSION_KIND,
    _RESERIALIZE,
    RECORD_KINDS,
    TEXT_FIELDS,
    DecisionRecord,
    Lineage,
)
from ._sources import agent_may_write, agent_source, skew_problem

__all__ = ["RecordRejected", "WireRecord", "check_wire_record", "parse_published"]

_FIELDS = frozenset(DecisionRecord.model_fields)
_LINEAGE_FIELDS = frozenset(Lineage.model_fields)
# The same language as DecisionRecord's id pattern, for fullmatch ('$' in `re` would also
# accept a trailing newline, which pydantic's regex does not).
_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._:-]{0,127}")
_MAX_DECISION = 64


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# orjson parses a 1 KB record 2-3 times faster than the standard library, and refuses NaN,
# Infinity and lone surrogates itself; without it the standard library refuses the constants.
_decode: Callable[[str], Any]
try:
    import orjson

    _decode = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with langgraph's dependencies
    _decode = json.JSONDecoder(parse_constant=_refuse_constant).decode


class RecordRejected(AgentdError):
    """A published record the log will not store; `reason` says why, for the log line."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class WireRecord(NamedTuple):
    """A checked record kept as the text it arrived in; the log stores `body` verbatim.

    A named tuple: built once per ingested record, and a frozen dataclass costs ~4 times more.
    """

    id: str
    ts: float
    kind: str
    agent: str | None
    run_id: str | None
    conversation_id: str | None
    trace_id: str | None
    body: str
    source: str | None = None
    """The `source` the body claims (the ingest puts the real one in)."""
    fields: dict[str, Any] | None = None
    """The JSON object the check parsed `body` to, kept for the log writer's observers
    (metrics, the live feed) so that they need not parse the text again; read-only. What the
    log stores and hashes is `body` alone (`source` is in `body`, not here)."""

    def body_json(self) -> str:
        """The JSON text the log stores and hashes (as for `DecisionRecord.body_json`)."""
        return self.body

    def to_record(self) -> DecisionRecord:
        """The full record (validated by pydantic), e.g. to redact it."""
        return DecisionRecord.from_wire(self.body)


def check_wire_record(data: bytes | str) -> WireRecord | None:
    """The record in `data` if it is plainly valid and carries its id and time, else None.

    None does not mean invalid: it means "ask `DecisionRecord.from_wire`".
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        text = data
    # What `DecisionRecord.from_wire` re-serializes: escapes (only where a backslash is) and the
    # words NaN / Infinity, even inside a string; substring tests first (a memchr, not a scan)
    if ("\\" in text or "NaN" in text or "Infinity" in text) and _RESERIALIZE.search(text):
        return None
    try:
        obj = _decode(text)  # NaN and Infinity (outside strings) raise here
    except ValueError:
        return None
    if type(obj) is not dict or not obj.keys() <= _FIELDS:
        return None
    record_id, ts, kind = obj.get("id"), obj.get("ts"), obj.get("kind")
    if type(record_id) is not str or _ID.fullmatch(record_id) is None:
        return None
    if type(ts) is int:
        ts = float(ts)
    if type(ts) is not float or not math.isfinite(ts):
        return None
    if type(kind) is not str or (kind not in RECORD_KINDS and not _EXTENSION_KIND.match(kind)):
        return None
    for name in TEXT_FIELDS:
        value = obj.get(name)
        if value is not None and type(value) is not str:
            return None
    decision = obj.get("decision")
    if decision is not None and len(decision) > _MAX_DECISION:
        return None
    lineage = obj.get("lineage")
    if lineage is not None:
        if type(lineage) is not dict or not lineage.keys() <= _LINEAGE_FIELDS:
            return None
        if any(v is not None and type(v) is not str for v in lineage.values()):
            return None
    attributes = obj.get("attributes")
    if attributes is not None and type(attributes) is not dict:
        return None
    return WireRecord(
        record_id,
        ts,
        kind,
        obj.get("agent"),
        obj.get("run_id"),
        obj.get("conversation_id"),
        obj.get("trace_id"),
        text,
        obj.get("source"),
        obj,
    )


def parse_published(
    agent: str,
    data: bytes,
    *,
    stored_at: float | None = None,
    max_skew_s: float | None = None,
) -> WireRecord | DecisionRecord:
    """Check a record published on `<prefix>.trace.<agent>`; raise `RecordRejected` if unfit.

    The subject's agent is the publisher's identity (NATS permissions let a replica publish
    only under its own name). A record without `agent` gets it; a record naming another agent
    is refused rather than rewritten: it comes from a misconfigured or forging replica, and
    storing it under either name would attribute a decision to an agent that may not have
    made it. A record must carry `id` (a redelivery is recognized by it) and `ts`, be of a kind
    an agent may write (`agent_may_write`: never a daemon's decision) and, when `stored_at` (the
    time the stream stored the message) and `max_skew_s` are given, be dated within
    `max_skew_s` of it. The record returned carries `source` = `agent:<agent>`; a record that
    claims another source is refused.
    """
    fast = check_wire_record(data)
    if fast is not None and fast.agent == agent:
        _check_owned(agent, fast.kind, fast.ts, stored_at, max_skew_s)
        return _with_source(fast, agent)
    if fast is not None and fast.agent is not None:
        raise RecordRejected(_other_agent(fast.agent, agent))
    try:
        record = DecisionRecord.from_wire(data)
    except ValidationError as exc:
        raise RecordRejected(_describe(exc)) from None
    except ValueError as exc:  # not UTF-8
        raise RecordRejected(f"not a JSON record: {exc}") from None
    missing = [name for name in ("id", "ts") if name not in record.model_fields_set]
    if missing:
        raise RecordRejected(
            f"no {' and no '.join(missing)}: a published record must carry its id and time,"
            " so that a redelivery is stored once"
        )
    if record.agent is not None and record.agent != agent:
        raise RecordRejected(_other_agent(record.agent, agent))
    _check_owned(agent, record.kind, record.ts, stored_at, max_skew_s)
    source = agent_source(agent)
    if record.source is not None and record.source != source:
        raise RecordRejected(_other_source(record.source, source))
    if record.agent is None or record.source is None:
        return record.model_copy(update={"agent": agent, "source": source})
    return record


def _check_owned(
    agent: str, kind: str, ts: float, stored_at: float | None, max_skew_s: float | None
) -> None:
    if not agent_may_write(kind):
        raise RecordRejected(
            f"agent {agent!r} may not write {kind!r} records: an agent's trace subject carries"
            " only its runs (run.*) and its own extension records (x.*); this kind is the"
            " daemon's"
        )
    if stored_at is not None and max_skew_s is not None:
        problem = skew_problem(ts, stored_at, max_skew_s)
        if problem is not None:
            raise RecordRejected(problem)


def _with_source(record: WireRecord, agent: str) -> WireRecord:
    """`record` with `source` = `agent:<agent>` in its body (inserted as its first field)."""
    claimed = record.source
    if claimed is not None:
        if claimed == agent_source(agent):
            return record
        raise RecordRejected(_other_source(claimed, agent_source(agent)))
    text = record.body
    prefix, source = _source_field(agent)
    # the body is a JSON object: its first character is '{' unless whitespace precedes it
    body = prefix + text[1:] if text[0] == "{" else _insert_after_brace(text, prefix)
    return WireRecord(
        record.id,
        record.ts,
        record.kind,
        record.agent,
        record.run_id,
        record.conversation_id,
        record.trace_id,
        body,
        source,
        record.fields,
    )


def _insert_after_brace(text: str, prefix: str) -> str:
    start = text.find("{")
    return text[:start] + prefix + text[start + 1 :]


@functools.lru_cache(maxsize=4096)
def _source_field(agent: str) -> tuple[str, str]:
    """('{"source":"agent:<agent>",', 'agent:<agent>'): built once per agent."""
    source = agent_source(agent)
    return '{"source":' + json.dumps(source) + ",", source


def _other_source(claimed: str, source: str) -> str:
    return (
        f"the record claims source {claimed[:64]!r} but arrived from {source!r}; the source of"
        " a record is the identity it arrived from, never what it says"
    )


def body_digest(data: bytes) -> str:
    """How a refused body is kept in the `trace.rejected` record: its digest, not its text."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _other_agent(claimed: str, subject_agent: str) -> str:
    return (
        f"the record names agent {claimed[:64]!r} but was published on {subject_agent!r}'s trace"
        " subject; a replica may record only its own decisions"
    )


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"]) or "record"
        problems.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "invalid record: " + "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
