"""Runs, derived from the decision log (and the run ledger while workers do not log runs).

A run is one inbox message handled by one agent. Two sources describe runs:

- `run.*` records, which workers publish through `agentd.trace.<agent>`: `run.started` opens a
  run (the message id in `inputs.message_id`), `run.finished` (decision "ok") or `run.failed`
  (decision "error" or "cancelled") closes it, with `run_id`, `conversation_id`, `trace_id`
  and the duration in `attributes.duration_s`.
- `message.routed` records (written by the router for every accepted message) joined by message
  id with the worker's run ledger (the `agentd_runs` key-value bucket: one entry per finished
  run, the first completion wins), which gives the outcome, run id, replica and duration.

Both may describe the same run; `run.*` records win field by field where they say
something, and the routed record supplies when the message was accepted. A message that was
routed and has neither a ledger entry nor a run record is `pending` (queued or in progress); one
whose runs kept failing until it went to the dead-letter stream is `dead` (workers record only
successes in the ledger; the dead-letter stream says which messages gave up, and why).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from agentd.trace import DecisionRecord

__all__ = ["RUN_STATUSES", "RunSummary", "derive_runs", "message_id_of"]

RUN_STATUSES = ("pending", "running", "ok", "failed", "dead")
_FINISHED_OK = {"ok", "finished", "succeeded"}
_FINISHED_BAD = {"error", "failed", "cancelled"}
# what replicas record about each run (agentd/worker/_run_records.py)
RUN_RECORD_KINDS = ("run.started", "run.finished", "run.failed")


@dataclass(slots=True)
class RunSummary:
    """One run as `agentctl runs` lists it; times are epoch seconds."""

    message_id: str
    agent: str | None
    status: str
    run_id: str | None = None
    conversation_id: str | None = None
    trace_id: str | None = None
    replica: str | None = None
    sender: str | None = None
    routed_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    error: str | None = None
    source: str = "log"

    @property
    def at(self) -> float:
        """When the run first showed up (for ordering and `--since`)."""
        return self.routed_at or self.started_at or self.finished_at or 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def message_id_of(record: DecisionRecord) -> str | None:
    """The inbox message a record is about (`inputs.message_id` or `attributes.message_id`)."""
    for holder in (record.inputs, record.attributes):
        if isinstance(holder, dict):
            value = holder.get("message_id")
            if isinstance(value, str):
                return value
    return None


def derive_runs(
    records: Iterable[DecisionRecord],
    ledger: Mapping[str, Mapping[str, Any]],
    dead_letters: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[RunSummary]:
    """Runs described by `records` (routed, dead-lettered and `run.*` records, any order),
    `ledger` (finished runs by message id: the worker's `RunResult` objects) and `dead_letters`
    (entries of the dead-letter stream by message id: `error`, `deliveries`), newest first."""
    runs: dict[str, RunSummary] = {}

    def run_for(key: str, record: DecisionRecord) -> RunSummary:
        run = runs.get(key)
        if run is None:
            run = runs[key] = RunSummary(message_id=key, agent=record.agent, status="pending")
        run.agent = run.agent or record.agent
        run.conversation_id = run.conversation_id or record.conversation_id
        run.trace_id = run.trace_id or record.trace_id
        return run

    run_records: list[DecisionRecord] = []
    dead_at: dict[str, float] = {}  # when each message was dead-lettered (the last time)
    for record in sorted(records, key=lambda r: r.ts):
        key = message_id_of(record)
        if record.kind in RUN_RECORD_KINDS:
            run_records.append(record)
        elif key is not None and record.kind == "message.routed":
            run = run_for(key, record)
            run.routed_at = record.ts if run.routed_at is None else min(run.routed_at, record.ts)
            sender = record.inputs.get("from") if isinstance(record.inputs, dict) else None
            run.sender = sender if isinstance(sender, str) else run.sender
        elif key is not None and record.kind == "message.dead_lettered":
            run = run_for(key, record)
            run.status, run.finished_at = "dead", record.ts
            run.error = record.reason or run.error
            dead_at[key] = record.ts
    # run.started names the inbox message; finished and failed name only the run
    message_of_run = {
        record.run_id: key
        for record in run_records
        if record.run_id and (key := message_id_of(record)) is not None
    }
    recorded: set[str] = set()
    for record in run_records:
        key = message_id_of(record) or message_of_run.get(record.run_id or "")
        key = key or record.run_id or record.id
        recorded.add(key)
        run = run_for(key, record)
        if run.status == "dead" and record.ts > dead_at.get(key, float("inf")):
            run.status = "running"  # replayed from the dead-letter stream: a run after it counts
        _apply_run_record(run, record)
    # then the outcome: the ledger (successes only) for runs no replica recorded; a message
    # given up on is dead, whatever its attempts recorded
    for key, run in runs.items():
        entry = ledger.get(key)
        received = entry.get("received_at") if entry is not None else None
        replayed = isinstance(received, int | float) and received > dead_at.get(key, float("inf"))
        if entry is not None and (run.status != "dead" or replayed) and key not in recorded:
            _apply_ledger(run, entry)
        dead = (dead_letters or {}).get(key)
        if dead is not None and run.status != "ok":
            run.status = "dead"
            run.error = dead.get("error") or run.error
    return sorted(runs.values(), key=lambda r: r.at, reverse=True)


def _apply_ledger(run: RunSummary, entry: Mapping[str, Any]) -> None:
    run.source = "ledger"
    run.status = "ok" if entry.get("ok") else "failed"
    run.run_id = entry.get("run_id") or run.run_id
    run.replica = entry.get("replica") or run.replica
    # a run that succeeded has no error, whatever an earlier attempt said
    run.error = None if run.status == "ok" else entry.get("error") or run.error
    duration = entry.get("duration_s")
    received = entry.get("received_at")
    if isinstance(duration, int | float):
        run.duration_s = float(duration)
    if isinstance(received, int | float):
        run.started_at = float(received)
        if run.duration_s is not None:
            run.finished_at = run.started_at + run.duration_s


def _apply_run_record(run: RunSummary, record: DecisionRecord) -> None:
    run.source = "log"
    run.run_id = record.run_id or run.run_id
    run.replica = record.replica or run.replica
    decision = "started" if record.kind == "run.started" else (record.decision or "").lower()
    attributes = record.attributes or {}
    if decision == "started":
        run.started_at = record.ts if run.started_at is None else min(run.started_at, record.ts)
        if run.status in ("pending",):
            run.status = "running"
        return
    if decision in _FINISHED_OK or decision in _FINISHED_BAD:
        if run.status != "dead":  # the dead-letter record outranks the attempts before it
            run.status = "ok" if decision in _FINISHED_OK else "failed"
        run.finished_at = record.ts
        if run.status == "failed":
            run.error = record.reason
        elif run.status == "ok":  # a replayed or retried message that then succeeded
            run.error = None
        duration = attributes.get("duration_s")
        if isinstance(duration, int | float):
            run.duration_s = float(duration)
        elif run.started_at is not None:
            run.duration_s = round(record.ts - run.started_at, 6)
