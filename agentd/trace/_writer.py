"""The write path: chaining a batch of records and signing checkpoints, inside a transaction.

Kept apart from `DecisionLog` so the hot loop stays small and visible: per record one
serialization (cached on the record), two SHA-256 (leaf, chain), an amortized one for the Merkle
frontier, up to three key digests for the block filter, and one row in a single `executemany`.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ._errors import DecisionLogDamaged, DecisionLogError
from ._keyindex import BLOCK_SIZE, KEY_SEEDS, block_filter
from ._merkle import MerkleFrontier
from ._record import DecisionRecord
from ._schema import Checkpoint
from ._wire import WireRecord
from .verifier import checkpoint_message

__all__ = ["ChainState", "Signer", "rollback", "sign_checkpoint", "write_batch"]

Signer = Callable[[bytes], tuple[str, str]]
"""Signs a message; returns (signature hex, key id)."""

_INSERT = (
    "INSERT INTO records (seq, id, ts, kind, agent, run_id, conversation_id, trace_id, body,"
    " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RUN_SEED, _CONVERSATION_SEED, _TRACE_SEED = KEY_SEEDS["r"], KEY_SEEDS["c"], KEY_SEEDS["t"]
# Below SQLite's historical limit of 999 bound parameters.
_ID_CHUNK = 500


@dataclass(slots=True)
class ChainState:
    """The writer's view of the log's head.

    The Merkle frontier, the chain head, the last signed tree size, and the key digests of the
    block still filling.
    """

    frontier: MerkleFrontier
    chain: bytes
    checkpointed: int
    block_keys: set[int]
    latest: Checkpoint | None = None
    """The last checkpoint signed (or found on open)."""
    leaves: list[bytes] | None = None
    """Leaf hashes appended after tree size `leaves_base`, kept (when not None) so that the
    consistency proof of the next published checkpoint needs no reread of the file."""
    leaves_base: int = 0


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT may have ended it already)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def write_batch(
    conn: sqlite3.Connection,
    state: ChainState,
    batch: Sequence[DecisionRecord | WireRecord],
    *,
    sign: Signer,
    log_id: str,
    checkpoint_every: int,
) -> tuple[int, int, frozenset[str]]:
    """Insert the records not stored yet in one transaction; return (appended, duplicates,
    the ids of the batch the log held already).

    `state` advances only when the transaction commits.
    """
    unique: dict[str, DecisionRecord | WireRecord] = {}
    for record in batch:
        unique.setdefault(record.id, record)
    duplicates = len(batch) - len(unique)
    if not unique:
        return 0, duplicates, frozenset()
    # Serialize before the transaction: a record that cannot be stored fails the batch here.
    bodies = {record_id: record.body_json() for record_id, record in unique.items()}
    frontier = state.frontier.copy()
    block_keys = set(state.block_keys)
    conn.execute("BEGIN IMMEDIATE")
    try:
        head = conn.execute("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        if head is not None and head[0] != frontier.size:
            raise DecisionLogError(
                f"the log holds {head[0]} records but this writer expected {frontier.size}:"
                " another process writes the same file"
            )
        if head is not None and head[1] != state.chain.hex():
            raise _rewritten(conn, state, int(head[0]))
        stored = _stored_ids(conn, list(unique))
        duplicates += len(stored)
        rows = []
        chain = state.chain
        prev_hex = chain.hex()
        sha256 = hashlib.sha256
        crc32 = zlib.crc32
        append_leaf = frontier.append
        new_leaves: list[bytes] = []
        keep_leaf = new_leaves.append
        add_key = block_keys.add
        size = frontier.size
        for record_id, record in unique.items():
            if record_id in stored:
                continue
            body = bodies[record_id]
            leaf = sha256(b"\x00" + body.encode("utf-8")).digest()
            chain = sha256(chain + leaf).digest()
            append_leaf(leaf)
            keep_leaf(leaf)
            size += 1
            # the block filter's digests (`record_key_digests`, inlined: this loop is hot)
            run_id, conversation_id, trace_id = (
                record.run_id,
                record.conversation_id,
                record.trace_id,
            )
            if run_id is not None:
                add_key(crc32(run_id.encode(), _RUN_SEED))
            if conversation_id is not None:
                add_key(crc32(conversation_id.encode(), _CONVERSATION_SEED))
            if trace_id is not None:
                add_key(crc32(trace_id.encode(), _TRACE_SEED))
            if size % BLOCK_SIZE == 0:
                conn.execute(
                    "INSERT OR REPLACE INTO key_blocks (block, digests) VALUES (?, ?)",
                    (size // BLOCK_SIZE - 1, block_filter(block_keys)),
                )
                block_keys.clear()
            chain_hex = chain.hex()
            rows.append(
                (
                    size,
                    record_id,
                    record.ts,
                    record.kind,
                    record.agent,
                    run_id,
                    conversation_id,
                    trace_id,
                    body,
                    prev_hex,
                    chain_hex,
                )
            )
            prev_hex = chain_hex
        conn.executemany(_INSERT, rows)
        checkpointed, latest = state.checkpointed, state.latest
        if frontier.size - checkpointed >= checkpoint_every:
            latest = sign_checkpoint(conn, frontier, chain, sign, log_id)
            checkpointed = latest.tree_size
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    state.frontier, state.chain, state.checkpointed = frontier, chain, checkpointed
    state.latest = latest
    state.block_keys = block_keys
    if state.leaves is not None:
        state.leaves.extend(new_leaves)
    return len(rows), duplicates, frozenset(stored)


def sign_checkpoint(
    conn: sqlite3.Connection,
    frontier: MerkleFrontier,
    chain: bytes,
    sign: Signer,
    log_id: str,
) -> Checkpoint:
    """Sign and insert the checkpoint for `frontier` (call inside a write transaction)."""
    root, head = frontier.root().hex(), chain.hex()
    signed_at_us = time.time_ns() // 1000
    signature, key = sign(checkpoint_message(log_id, frontier.size, root, head, signed_at_us))
    cp = Checkpoint(log_id, frontier.size, root, head, signed_at_us, key, signature)
    conn.execute(
        "INSERT INTO checkpoints (tree_size, root, chain_head, signed_at_us, key_id, signature,"
        " frontier) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (cp.tree_size, root, head, signed_at_us, key, signature, frontier.encode()),
    )
    return cp


def _rewritten(conn: sqlite3.Connection, state: ChainState, last: int) -> DecisionLogDamaged:
    """The file's head no longer is the chain this writer built: someone rewrote records under
    it (and recomputed the chain, or the last hash would still match)."""
    signed = state.latest
    first = 1
    # the first record after the latest checkpoint whose chain head the file still holds
    for size, head in conn.execute(
        "SELECT tree_size, chain_head FROM checkpoints ORDER BY tree_size DESC"
    ):
        row = conn.execute("SELECT hash FROM records WHERE seq = ?", (size,)).fetchone()
        if row is not None and row[0] == head:
            first = int(size) + 1
            break
    row = conn.execute("SELECT id FROM records WHERE seq = ?", (first,)).fetchone()
    named = f"record {first}" + ("" if row is None else f" (id {row[0]})")
    where = (
        f"the checkpoint signed at tree size {signed.tree_size}"
        if signed is not None
        else "the records this writer appended"
    )
    return DecisionLogDamaged(
        f"the decision log was rewritten under its writer: record {last}'s stored hash is not"
        f" the chain head the writer built, so the file no longer extends {where}; {named} is"
        " the first that can be the changed one. The writer refuses to extend or sign it: stop"
        " the daemon, restore decisions.db, run `agentctl audit verify --log FILE`",
        seq=first,
    )


def _stored_ids(conn: sqlite3.Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start : start + _ID_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(f"SELECT id FROM records WHERE id IN ({marks})", chunk)
        found.update(r[0] for r in rows)
    return found
