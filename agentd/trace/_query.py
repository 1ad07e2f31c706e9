"""The decision log's read side: records by id or by filters, and the JSON-lines export.

Every function opens one read-only connection of its own inside one read transaction: a
snapshot in WAL mode, so a query or an export neither waits for nor holds up the writer's
commits, and sees one consistent state of the file (the key filters and the records they point
to included). `DecisionLog.get`, `find` and `export` delegate here; the audit package and the
daemon's read verbs use `open_reader` and `export_lines` directly.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._errors import DecisionLogError
from ._keyindex import candidate_ranges, key_digest
from ._record import DecisionRecord
from ._schema import connect, load_retention

__all__ = ["LoggedRecord", "export_lines", "find_records", "get_record", "open_reader"]


@dataclass(frozen=True, slots=True)
class LoggedRecord:
    """A stored record with its position (`seq`, 1-based) and chain hash."""

    seq: int
    hash: str
    record: DecisionRecord


@contextmanager
def open_reader(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction (a consistent snapshot in WAL mode).

    Read-only: it can neither block the daemon's writer (WAL readers do not) nor change the file.
    """
    if not Path(path).is_file():
        raise DecisionLogError(f"no decision log at {path}")
    try:
        conn = connect(path, read_only=True)
    except sqlite3.Error as exc:
        raise DecisionLogError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute("BEGIN")
        yield conn
    finally:
        conn.close()


def get_record(path: Path, record_id: str) -> LoggedRecord | None:
    """The stored record with this id, if it is (still) in the log."""
    with open_reader(path) as conn:
        found = _select(conn, "WHERE id = ?", (record_id,), limit=1)
    return found[0] if found else None


def find_records(
    path: Path,
    *,
    tree_size: int,
    run_id: str | None = None,
    conversation_id: str | None = None,
    trace_id: str | None = None,
    agent: str | None = None,
    kind: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 1000,
) -> list[LoggedRecord]:
    """Records matching every given filter (time as epoch seconds, `until` exclusive), oldest
    first, at most `limit`, among the first `tree_size` records.

    Filters by run, conversation or trace id read the block key filters first and scan only
    the blocks that may hold the ids (see `_keyindex`).
    """
    digests = [
        key_digest(prefix, value)
        for prefix, value in (("r", run_id), ("c", conversation_id), ("t", trace_id))
        if value is not None
    ]
    clauses: list[str] = []
    params: list[object] = []
    for column, value in (
        ("run_id", run_id),
        ("conversation_id", conversation_id),
        ("trace_id", trace_id),
        ("agent", agent),
        ("kind", kind),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    with open_reader(path) as conn:
        if not digests:
            where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
            return _select(conn, where, tuple(params), limit=limit)
        retention = load_retention(conn)
        first = 1 if retention is None else retention.pruned_to + 1
        found: list[LoggedRecord] = []
        for lo, hi in candidate_ranges(conn, digests, first, tree_size):
            if len(found) >= limit:
                break
            where = " AND ".join(["seq BETWEEN ? AND ?", *clauses])
            found += _select(conn, f"WHERE {where}", (lo, hi, *params), limit=limit - len(found))
    return found


def export_lines(
    path: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    after_seq: int = 0,
) -> Generator[str, None, None]:
    """JSON lines, oldest first: `{"body", "hash", "prev_hash", "seq"}` per record with
    `since <= ts < until` (epoch seconds) and `seq > after_seq`.

    `body` is the stored record text as a JSON string, so an auditor can recompute every leaf
    hash, and the chain across consecutive lines, from the export alone. A generator over one
    snapshot: close it (or run it to the end) to release its connection.
    """
    clauses: list[str] = []
    params: list[float] = []
    if after_seq:
        clauses.append("seq > ?")
        params.append(after_seq)
    if since is not None:
        clauses.append("ts >= ?")
        params.append(since)
    if until is not None:
        clauses.append("ts < ?")
        params.append(until)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    sql = f"SELECT seq, prev_hash, hash, body FROM records {where} ORDER BY seq"
    with open_reader(path) as conn:
        for seq, prev_hash, hash_hex, body in conn.execute(sql, params):
            line = {"body": body, "hash": hash_hex, "prev_hash": prev_hash, "seq": seq}
            yield json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def _select(
    conn: sqlite3.Connection, where: str, params: tuple[object, ...], *, limit: int
) -> list[LoggedRecord]:
    sql = f"SELECT seq, hash, body FROM records {where} ORDER BY seq LIMIT ?"
    rows = conn.execute(sql, (*params, limit)).fetchall()
    return [LoggedRecord(int(s), h, DecisionRecord.from_body(b)) for s, h, b in rows]
