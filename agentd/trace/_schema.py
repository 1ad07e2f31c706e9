"""The decision log's SQLite schema and the small row types shared by writer and verifier.

Tables:

- `meta(key, value)`: `log_id` (random, bound into every signature so checkpoints cannot be
  replayed from another log) and `format`.
- `records`: one row per record. `seq` (1, 2, ...) is the record's leaf index + 1; `body` is the
  record's JSON text, hashed verbatim; `id`, `ts`, `kind`, `agent`, `run_id`, `conversation_id`,
  `trace_id` are copies of body fields for queries (verify checks they still match the body);
  `prev_hash` and `hash` (hex) form the chain: hash = SHA-256(prev_hash || leaf hash), where
  the first record's prev_hash is 32 zero bytes. Indexed: `id` (unique: dedupe) and `ts`, both
  growing with time, so index inserts stay at the right edge of their B-trees.
- `key_blocks`: per block of 1024 records, the digests of its run, conversation and trace ids
  (see `_keyindex`): the index for queries by those ids.
- `checkpoints`: one row per signed tree head: `tree_size` (= the last seq it covers), `root`,
  `chain_head` (the hash of record `tree_size`), `signed_at_us`, `key_id`, `signature`, and
  `frontier`, the unsigned Merkle frontier at that size (checked against the signed root before
  use) so the writer can reopen, prove and prune without rereading the whole log.
- `retention`: at most one row: records 1..`pruned_to` were deleted, and a signature over that
  statement. A checkpoint at exactly `pruned_to` is kept forever: its frontier and chain head are
  where verification of the retained records starts.

Triggers refuse UPDATE on records and checkpoints and DELETE beyond the pruned range. They stop
mistakes, not attackers (who can drop them): tamper evidence comes from the hashes and signatures.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "ZERO_HASH",
    "Checkpoint",
    "connect",
    "create_schema",
    "load_checkpoints",
    "load_retention",
]

FORMAT = "agentd-decision-log/1"
ZERO_HASH = bytes(32)

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    agent TEXT,
    run_id TEXT,
    conversation_id TEXT,
    trace_id TEXT,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ts ON records(ts);
CREATE TABLE IF NOT EXISTS key_blocks (block INTEGER PRIMARY KEY, digests BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    tree_size INTEGER PRIMARY KEY,
    root TEXT NOT NULL,
    chain_head TEXT NOT NULL,
    signed_at_us INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    frontier TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS retention (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    pruned_to INTEGER NOT NULL,
    signed_at_us INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the decision log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
WHEN OLD.seq > coalesce((SELECT pruned_to FROM retention), 0)
BEGIN SELECT RAISE(ABORT, 'records are removed only by retention'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
"""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: the log held `tree_size` records with this root and chain head."""

    log_id: str
    tree_size: int
    root: str
    chain_head: str
    signed_at_us: int
    key_id: str
    signature: str

    def to_json_object(self) -> dict[str, Any]:
        """The form embedded in proofs and read by `agentd.trace.verifier`."""
        return {
            "log_id": self.log_id,
            "tree_size": self.tree_size,
            "root": self.root,
            "chain_head": self.chain_head,
            "signed_at_us": self.signed_at_us,
            "key_id": self.key_id,
            "signature": self.signature,
        }


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    checkpoint: Checkpoint
    frontier: str


@dataclass(frozen=True, slots=True)
class Retention:
    pruned_to: int
    signed_at_us: int
    key_id: str
    signature: str


def connect(
    path: Path, *, read_only: bool = False, synchronous: str = "NORMAL"
) -> sqlite3.Connection:
    """Open the log database; autocommit mode, transactions are explicit."""
    if read_only:
        conn = sqlite3.connect(
            f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
        )
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def create_schema(conn: sqlite3.Connection, new_log_id: str) -> str:
    """Create missing tables; return the log id (the stored one, or `new_log_id` if new)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _split_ddl(_DDL):
            conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('log_id', ?)", (new_log_id,))
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT,))
        (log_id,) = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return str(log_id)


def _split_ddl(ddl: str) -> list[str]:
    # executescript() commits first; splitting keeps the schema in our own transaction.
    # complete_statement() knows a trigger's inner ';' does not end it.
    statements: list[str] = []
    buf = ""
    for line in ddl.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            statements.append(buf)
            buf = ""
    return statements


def load_log_id(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
    return None if row is None else str(row[0])


def load_checkpoints(conn: sqlite3.Connection, log_id: str) -> list[StoredCheckpoint]:
    """All checkpoints, smallest tree first."""
    rows = conn.execute(
        "SELECT tree_size, root, chain_head, signed_at_us, key_id, signature, frontier"
        " FROM checkpoints ORDER BY tree_size"
    ).fetchall()
    return [
        StoredCheckpoint(Checkpoint(log_id, int(r[0]), r[1], r[2], int(r[3]), r[4], r[5]), r[6])
        for r in rows
    ]


def load_retention(conn: sqlite3.Connection) -> Retention | None:
    row = conn.execute(
        "SELECT pruned_to, signed_at_us, key_id, signature FROM retention WHERE one = 1"
    ).fetchone()
    return None if row is None else Retention(int(row[0]), int(row[1]), row[2], row[3])
