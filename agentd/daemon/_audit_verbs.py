"""Read verbs over the decision log: `audit.verify`, `audit.prove`, `audit.export`, `trace`,
`runs`.

They go through the daemon, which holds the log and its key. Every read runs in a worker thread
on a read-only SQLite connection (WAL readers neither wait for nor block the writer), so a long
audit holds up neither the event loop nor the recorder. `audit.export` answers in pages of about
512 KiB with a cursor (`next_after`); agentctl asks for page after page and streams the lines,
so no reply nears NATS's 1 MiB limit and the daemon never holds a whole range in memory.
`audit.prove` and `audit.export` are recorded as `control.command` decisions (who took what out
of the log); verification and views are not.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from agentd.audit import (
    RUN_STATUSES,
    derive_runs,
    export_page,
    message_id_of,
    open_reader,
    run_of_message,
)
from agentd.bus import BoundedJSONError, Subjects, loads_bounded
from agentd.control import ControlPlane, ControlRequest
from agentd.daemon._authority import Authority
from agentd.errors import ControlError
from agentd.router import DeadLetters
from agentd.trace import DecisionLog, DecisionRecord, WitnessEntry, public_key_path

__all__ = ["AuditVerbs"]

log = logging.getLogger("agentd.audit")

MAX_TRACE_RECORDS = 5000
# a page stays well under NATS's default 1 MiB payload limit, JSON escaping included
MAX_PAGE_BYTES = 512 * 1024
# the newest dead letters read per `runs` request (one stream read each)
MAX_DEAD_LETTERS = 500
# `runs --status`: the log is read back in pages of this many records, this many at most
RUNS_SCAN_RECORDS = 2000
MAX_RUNS_SCAN = 50_000
RUN_KINDS = (
    "message.routed",
    "message.dead_lettered",
    "run.started",
    "run.finished",
    "run.failed",
)


def _opt(request: ControlRequest, name: str, kind: type | tuple[type, ...]) -> Any:
    value = request.args.get(name)
    if value is None:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ControlError("bad_request", f"argument {name!r} has the wrong type")
    return value


def _page(rows: list[dict[str, Any]], offset: int, max_bytes: int) -> tuple[list[Any], int | None]:
    """rows[offset:] up to about `max_bytes` of JSON (at least one row), and the next offset."""
    page: list[Any] = []
    size = 0
    for index in range(offset, len(rows)):
        size += len(json.dumps(rows[index], default=str)) + 2
        if page and size > max_bytes:
            return page, index
        page.append(rows[index])
    return page, None


class AuditVerbs:
    """The decision log's read verbs, registered on the control plane."""

    def __init__(
        self,
        *,
        decision_log: DecisionLog,
        signing_key_file: Path,
        authority: Authority,
        js: JetStreamContext,
        subjects: Subjects,
        dead_letters: DeadLetters,
        witnessed: Callable[[], Awaitable[list[WitnessEntry]]] | None = None,
    ) -> None:
        self._log = decision_log
        self._public_key_file = public_key_path(signing_key_file)
        self._authority = authority
        self._js = js
        self._subjects = subjects
        self._ledger: KeyValue | None = None
        self._dead_letters = dead_letters
        self._witnessed = witnessed
        # the last `runs` answer, for its next pages: (request, runs, complete)
        self._runs_cache: tuple[tuple[Any, ...], list[dict[str, Any]], bool] | None = None

    def register(self, control: ControlPlane) -> None:
        verbs: dict[str, Callable[[ControlRequest], Awaitable[Any]]] = {
            "audit.verify": self.verify,
            "audit.prove": self.prove,
            "audit.export": self.export,
            "trace": self.trace,
            "runs": self.runs,
        }
        for verb, handler in verbs.items():
            control.register(verb, handler)

    def _command(self, request: ControlRequest, verb: str, **fields: Any) -> None:
        self._authority.record_command(request.operator, verb, request.args, **fields)

    async def verify(self, request: ControlRequest) -> dict[str, Any]:
        """Verify the whole log (or `from_seq`..`to_seq`) against the daemon's key."""
        from_seq, to_seq = _opt(request, "from_seq", int), _opt(request, "to_seq", int)
        # the checkpoints kept outside the file: the anchor and the witnesses
        witness = await self._witnessed() if self._witnessed is not None else []
        report = await anyio.to_thread.run_sync(self._log.verify, from_seq, to_seq, witness)
        return {
            **report.to_dict(),
            "anchored": self._witnessed is not None,
            "key_id": self._log.key_id,
            "log": str(self._log.path),
            "public_key_file": str(self._public_key_file),
        }

    async def prove(self, request: ControlRequest) -> dict[str, Any]:
        """An inclusion proof of record `id` under the latest signed checkpoint."""
        record_id = request.args.get("id")
        if not isinstance(record_id, str) or not record_id:
            raise ControlError("bad_request", "audit.prove needs 'id', a record id")
        self._command(request, "audit.prove")
        proof = await anyio.to_thread.run_sync(self._log.prove, record_id)
        return {
            "proof": proof.model_dump(mode="json"),
            "key_id": self._log.key_id,
            "public_key_file": str(self._public_key_file),
        }

    async def export(self, request: ControlRequest) -> dict[str, Any]:
        """One page of JSON lines with `since <= ts < until`, after seq `after_seq`."""
        since = _opt(request, "since", (int, float))
        until = _opt(request, "until", (int, float))
        after = _opt(request, "after_seq", int) or 0
        page_bytes = min(_opt(request, "page_bytes", int) or MAX_PAGE_BYTES, MAX_PAGE_BYTES)
        if after == 0:
            self._command(request, "audit.export")
        page = await anyio.to_thread.run_sync(
            lambda: export_page(
                self._log.path, since=since, until=until, after_seq=after, max_bytes=page_bytes
            )
        )
        return {"lines": page.lines, "next_after": page.next_after}

    async def trace(self, request: ControlRequest) -> dict[str, Any]:
        """Every record of a run, a trace or a conversation (or one record) with this id; a
        message id stands for the run that handled it."""
        key = request.args.get("id")
        if not isinstance(key, str) or not key:
            raise ControlError("bad_request", "trace needs 'id': a run, trace or conversation id")
        limit = min(_opt(request, "limit", int) or MAX_TRACE_RECORDS, MAX_TRACE_RECORDS)
        found, matched = await anyio.to_thread.run_sync(self._find_all, key, limit)
        if not found:  # a message id (what `agentctl send` prints): the run that handled it
            run_id = await anyio.to_thread.run_sync(self._run_of_message, key)
            if isinstance(run_id, str):
                hits = await anyio.to_thread.run_sync(
                    lambda: self._log.find(run_id=run_id, limit=limit)
                )
                found = {h.record.id: (h.seq, h.record) for h in hits}
                matched = ["message"] if found else []
        if not found:
            raise ControlError(
                "not_found",
                f"no run, trace, conversation, message or record {key!r} in the decision log",
            )
        records = sorted(found.values(), key=lambda pair: pair[0])[:limit]
        return {
            "id": key,
            "matched": matched,
            "truncated": len(found) > limit,
            "records": [
                {"seq": seq, **r.model_dump(mode="json", exclude_none=True)} for seq, r in records
            ],
        }

    def _find_all(
        self, key: str, limit: int
    ) -> tuple[dict[str, tuple[int, DecisionRecord]], list[str]]:
        found: dict[str, tuple[int, DecisionRecord]] = {}
        matched: list[str] = []
        for name, hits in (
            ("run", self._log.find(run_id=key, limit=limit)),
            ("trace", self._log.find(trace_id=key, limit=limit)),
            ("conversation", self._log.find(conversation_id=key, limit=limit)),
        ):
            if hits:
                matched.append(name)
            found.update({h.record.id: (h.seq, h.record) for h in hits})
        single = self._log.get(key)
        if single is not None:
            matched.append("record")
            found[single.record.id] = (single.seq, single.record)
        return found, matched

    async def runs(self, request: ControlRequest) -> Any:
        """Runs, newest first: from `run.*` records, else routed messages and the ledger.

        With `status`, the log is read back page by page (`scan_records` records each, at most
        MAX_RUNS_SCAN in all) until `limit` runs match, so a filter finds old runs too. With
        `offset`, the answer is one page of at most `page_bytes` ({"runs", "next_offset",
        "total", "complete"}; agentctl asks page after page); without, the runs as one list,
        refused when they would not fit in one NATS message."""
        agent = _opt(request, "agent", str)
        since = _opt(request, "since", (int, float))
        status = _opt(request, "status", str)
        limit = _opt(request, "limit", int) or 50
        offset = _opt(request, "offset", int)
        page_bytes = min(_opt(request, "page_bytes", int) or MAX_PAGE_BYTES, MAX_PAGE_BYTES)
        scan = min(_opt(request, "scan_records", int) or RUNS_SCAN_RECORDS, RUNS_SCAN_RECORDS)
        if status is not None and status not in RUN_STATUSES:
            raise ControlError("bad_request", f"status must be one of {', '.join(RUN_STATUSES)}")
        if limit < 1 or (offset is not None and offset < 0):
            raise ControlError("bad_request", "limit must be at least 1 and offset not negative")
        key = (agent, since, status, limit, scan)
        cached = self._runs_cache
        if offset and cached is not None and cached[0] == key:  # the next page of the same ask
            found, complete = cached[1], cached[2]
        else:
            found, complete = await self._find_runs(agent, since, status, limit, scan)
            self._runs_cache = (key, found, complete)
        rows, next_offset = _page(found, offset or 0, page_bytes)
        if offset is None:
            if next_offset is not None:
                raise ControlError(
                    "too_large",
                    f"{len(found)} runs do not fit in one reply; ask for pages with 'offset' "
                    "(agentctl runs does) or a smaller 'limit'",
                )
            return rows
        return {"runs": rows, "next_offset": next_offset, "total": len(found), "complete": complete}

    async def _find_runs(
        self, agent: str | None, since: float | None, status: str | None, limit: int, scan: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` runs (matching `status`), newest first, and whether the log was read
        back as far as `since` (else MAX_RUNS_SCAN records stopped the search)."""
        records: list[DecisionRecord] = []
        ledger: dict[str, dict[str, Any]] = {}
        try:
            dead_entries = await self._dead_letters.list(agent=agent, limit=MAX_DEAD_LETTERS)
        except Exception:  # no dead-letter stream (yet): nothing has died
            dead_entries = []
        dead = {e["message_id"]: e for e in dead_entries if e.get("message_id")}
        page_size = max(limit * 4, scan) if status is None else scan
        before: int | None = None
        while True:
            page, before = await anyio.to_thread.run_sync(
                self._run_records, agent, since, page_size, before
            )
            records.extend(page)
            # the ledger is keyed by agent and message: routed records name both
            ledger |= await self._ledger_entries(
                {
                    (r.agent, message_id)
                    for r in page
                    if r.kind == "message.routed"
                    and r.agent is not None
                    and (message_id := message_id_of(r)) is not None
                }
            )
            runs = derive_runs(records, ledger, dead)
            if status is not None:
                runs = [r for r in runs if r.status == status]
            # newest first, so a run's last word (finished, failed, dead) is read before its
            # first (routed): the status of every run found so far is already right
            exhausted = len(page) < page_size
            if status is None or len(runs) >= limit or exhausted:
                return [r.to_dict() for r in runs[:limit]], exhausted or len(runs) >= limit
            if len(records) >= MAX_RUNS_SCAN:
                return [r.to_dict() for r in runs[:limit]], False

    def _run_records(
        self, agent: str | None, since: float | None, scan: int, before: int | None = None
    ) -> tuple[list[DecisionRecord], int | None]:
        """The newest `scan` run-related records older than seq `before`, and the oldest seq
        read (the next page's `before`)."""
        clauses = [f"kind IN ({', '.join('?' for _ in RUN_KINDS)})"]
        params: list[object] = list(RUN_KINDS)
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        sql = (
            f"SELECT seq, body FROM records WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT ?"
        )
        try:
            with open_reader(self._log.path) as conn:
                rows = conn.execute(sql, (*params, scan)).fetchall()
        except sqlite3.Error as exc:
            raise ControlError("log_unreadable", f"cannot read the decision log: {exc}") from None
        oldest = rows[-1][0] if rows else before
        return [DecisionRecord.from_body(body) for (_, body) in rows], oldest

    def _run_of_message(self, message_id: str) -> str | None:
        try:
            return run_of_message(self._log.path, message_id)
        except sqlite3.Error as exc:
            raise ControlError("log_unreadable", f"cannot read the decision log: {exc}") from None

    async def _ledger_entries(self, keys: set[tuple[str, str]]) -> dict[str, dict[str, Any]]:
        if self._ledger is None:
            try:
                self._ledger = await self._js.key_value(self._subjects.runs_bucket)
            except Exception:  # no ledger (yet): runs show what the log alone says
                return {}
        entries: dict[str, dict[str, Any]] = {}
        for agent, message_id in keys:
            try:
                entry = await self._ledger.get(f"run.{agent}.{message_id}")
            except KeyNotFoundError:
                continue
            if not entry.value:
                continue
            # the ledger's run keys are written by the agent's own replicas: untrusted input
            try:
                value = loads_bounded(entry.value, what="a run-ledger entry", max_bytes=1 << 20)
            except BoundedJSONError as exc:
                log.warning("run %s of %s: %s", message_id, agent, exc)
                continue
            if isinstance(value, dict):
                entries[message_id] = value
        return entries
