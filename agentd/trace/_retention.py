"""Retention: deleting the oldest records while the log stays verifiable.

Records are only ever removed as a prefix 1..P, in one transaction that

1. signs a checkpoint at exactly tree size P (unless one exists): its root covers every pruned
   record, and its stored frontier and chain head are where verification and proofs of the
   retained records start;
2. signs a retention statement (log id, P, time), so deleting more of the head is not mistaken
   for retention;
3. deletes the rows (the no-delete trigger lets through seqs up to the recorded P only).

By age, P is the longest prefix whose records are all older than the cutoff: one young record
keeps everything after it, even if older records follow (worker clocks differ). Old checkpoints
stay: they are small and their signatures still verify. Free pages are reused by new records;
the file does not shrink unless it is vacuumed.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._keyindex import BLOCK_SIZE
from ._replay import replay_leaves, start_state
from ._schema import load_checkpoints, load_retention
from ._writer import ChainState, Signer, rollback, sign_checkpoint
from .verifier import retention_message

__all__ = ["PruneResult", "prune_log"]


@dataclass(frozen=True, slots=True)
class PruneResult:
    """`pruned` records were deleted now; records 1..`pruned_to` are gone in total."""

    pruned: int
    pruned_to: int


def prune_log(
    conn: sqlite3.Connection,
    state: ChainState,
    log_id: str,
    public_key: Ed25519PublicKey,
    sign: Signer,
    *,
    max_age_s: float | None,
    max_records: int | None,
    now: float,
) -> PruneResult:
    """Apply retention; see the module docstring. Call with the writer's lock held."""
    if max_records is not None and max_records < 0:
        raise ValueError("max_records must not be negative")
    if max_age_s is not None and max_age_s < 0:
        raise ValueError("max_age_s must not be negative")
    retention = load_retention(conn)
    before = 0 if retention is None else retention.pruned_to
    size = state.frontier.size
    cut = before
    if max_records is not None:
        cut = max(cut, size - max_records)
    if max_age_s is not None:
        row = conn.execute(
            "SELECT seq FROM records WHERE ts >= ? ORDER BY seq LIMIT 1", (now - max_age_s,)
        ).fetchone()
        cut = max(cut, size if row is None else int(row[0]) - 1)
    if cut <= before:
        return PruneResult(0, before)
    conn.execute("BEGIN IMMEDIATE")
    try:
        checkpoints = load_checkpoints(conn, log_id)
        if all(c.checkpoint.tree_size != cut for c in checkpoints):
            if cut == size:
                frontier, chain = state.frontier, state.chain
            else:
                frontier, chain = start_state(checkpoints, cut, log_id, public_key, before)
                for replayed in replay_leaves(conn, frontier.size, chain, cut):
                    frontier.append(replayed.leaf)
                    chain = replayed.chain
            sign_checkpoint(conn, frontier, chain, sign, log_id)
        signed_at_us = time.time_ns() // 1000
        signature, key = sign(retention_message(log_id, cut, signed_at_us))
        conn.execute(
            "INSERT OR REPLACE INTO retention (one, pruned_to, signed_at_us, key_id, signature)"
            " VALUES (1, ?, ?, ?, ?)",
            (cut, signed_at_us, key, signature),
        )
        deleted = conn.execute("DELETE FROM records WHERE seq <= ?", (cut,)).rowcount
        # Block filters of blocks pruned whole; a block cut in two keeps its filter.
        conn.execute("DELETE FROM key_blocks WHERE block < ?", (cut // BLOCK_SIZE,))
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    state.checkpointed = max(state.checkpointed, cut)
    return PruneResult(deleted, cut)
