"""Rebuilding Merkle and chain state from the stored log, checking it on the way.

The writer needs the Merkle frontier and chain head at some tree size when it opens the log
(size = the last record), when retention cuts at a size, and when it builds a proof (the frontier
just before the proved leaf). It starts from the latest checkpoint at or below that size, whose
signature and stored frontier it checks, and folds the records after it, checking their order
and hashes: the writer never signs or proves anything on top of records that do not chain.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._errors import DecisionLogDamaged
from ._merkle import MerkleFrontier
from ._schema import ZERO_HASH, StoredCheckpoint
from .verifier import leaf_hash, verify_checkpoint_signature

__all__ = ["ReplayedLeaf", "replay_leaves", "start_state"]


@dataclass(frozen=True, slots=True)
class ReplayedLeaf:
    seq: int
    leaf: bytes
    chain: bytes
    """The record's (checked) chain hash."""


def start_state(
    checkpoints: Sequence[StoredCheckpoint],
    size: int,
    log_id: str,
    public_key: Ed25519PublicKey,
    pruned_to: int,
) -> tuple[MerkleFrontier, bytes]:
    """Frontier and chain head of the latest checkpoint at or below `size` (empty if none)."""
    base = None
    for stored in checkpoints:
        if stored.checkpoint.tree_size <= size:
            base = stored
    if base is None:
        if pruned_to:
            raise DecisionLogDamaged(f"the checkpoint at the pruned boundary {pruned_to} is gone")
        return MerkleFrontier(), ZERO_HASH
    cp = base.checkpoint
    failure = verify_checkpoint_signature(cp.to_json_object(), log_id, public_key)
    if failure is not None:
        raise DecisionLogDamaged(f"checkpoint at tree size {cp.tree_size}: {failure}")
    try:
        frontier = MerkleFrontier.decode(cp.tree_size, base.frontier)
    except ValueError:
        frontier = MerkleFrontier()
    if frontier.size != cp.tree_size or frontier.root().hex() != cp.root:
        raise DecisionLogDamaged(
            f"checkpoint at tree size {cp.tree_size}: stored frontier does not give its root"
        )
    return frontier, bytes.fromhex(cp.chain_head)


def replay_leaves(
    conn: sqlite3.Connection, after: int, chain: bytes, upto: int | None
) -> Iterator[ReplayedLeaf]:
    """Leaves of records after seq `after` (up to `upto`), each checked against the chain."""
    sql = "SELECT seq, body, prev_hash, hash FROM records WHERE seq > ?"
    params: tuple[int, ...] = (after,)
    if upto is not None:
        sql, params = sql + " AND seq <= ?", (after, upto)
    expected = after + 1
    for seq, body, prev_hex, hash_hex in conn.execute(sql + " ORDER BY seq", params):
        if seq != expected:
            raise DecisionLogDamaged(f"record {expected} is missing", seq=expected)
        leaf = leaf_hash(str(body).encode("utf-8"))
        computed = hashlib.sha256(chain + leaf).digest()
        if prev_hex != chain.hex() or hash_hex != computed.hex():
            raise DecisionLogDamaged(f"record {seq} does not chain", seq=seq)
        chain = computed
        expected += 1
        yield ReplayedLeaf(seq, leaf, chain)
    if upto is not None and expected != upto + 1:
        raise DecisionLogDamaged(f"record {expected} is missing", seq=expected)
