"""Consistency proofs for the checkpoints a writer publishes (see `_anchor`).

A proof from the last published checkpoint (tree size m) to the next (n) needs the Merkle
frontier at m and the leaf hashes m+1..n. Rereading those records from the file costs about a
third of what appending them did, so once the log is anchored the writer keeps the leaves it
appends (`ChainState.leaves`, at most `MAX_KEPT_LEAVES`) and the frontier at the last published
size (the one stored with that checkpoint). After a restart, or when publishing stalled past the
bound, the proof is rebuilt from the file instead, which also checks that its records still give
both signed roots.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._anchor import WitnessEntry
from ._merkle import MerkleFrontier
from ._proof import build_consistency_proof, checked_consistency
from ._schema import Checkpoint, connect
from ._writer import ChainState

__all__ = ["MAX_KEPT_LEAVES", "WitnessProofs"]

MAX_KEPT_LEAVES = 1 << 17  # 4 MiB of leaf hashes waiting for the next published checkpoint


class WitnessProofs:
    """Builds `WitnessEntry`s for one log; call under the log's lock."""

    def __init__(self, path: Path, log_id: str, public_key: Ed25519PublicKey) -> None:
        self._path, self._log_id, self._public_key = path, log_id, public_key
        self._published: MerkleFrontier | None = None
        """The frontier at the last published tree size, when known."""

    def entry(
        self,
        conn: sqlite3.Connection,
        state: ChainState,
        previous: Checkpoint | None,
        current: Checkpoint,
    ) -> WitnessEntry:
        if previous is None or previous.tree_size in (0, current.tree_size):
            self._published = None
            trim_leaves(state, current.tree_size)
            return WitnessEntry(current, 0 if previous is None else previous.tree_size)
        old, new = previous.tree_size, current.tree_size
        base, kept = self._published, state.leaves
        if base is not None and base.size == old and kept is not None:
            start, stop = old - state.leaves_base, new - state.leaves_base
            if start >= 0 and len(kept) >= stop:
                leaves = kept[start:stop]
                proof = checked_consistency(base, leaves, previous, current)
                self._published = _stored_frontier(conn, current) or _grown(base, leaves)
                if not trim_leaves(state, new):
                    self._published = None
                return WitnessEntry(current, old, tuple(proof))
        reader = connect(self._path, read_only=True)
        try:
            reader.execute("BEGIN")
            proof, frontier = build_consistency_proof(
                reader, self._log_id, self._public_key, previous, current
            )
        finally:
            reader.close()
        self._published = frontier if trim_leaves(state, new) else None
        return WitnessEntry(current, old, tuple(proof))


def trim_leaves(state: ChainState, size: int) -> bool:
    """Drop the kept leaves up to `size`; False when it stopped keeping them (too many waited:
    the next proof rereads the file)."""
    if state.leaves is None:
        return True
    if state.leaves_base <= size:
        del state.leaves[: size - state.leaves_base]
        state.leaves_base = size
    if len(state.leaves) > MAX_KEPT_LEAVES:
        state.leaves, state.leaves_base = [], state.frontier.size
        return False
    return True


def _stored_frontier(conn: sqlite3.Connection, cp: Checkpoint) -> MerkleFrontier | None:
    """The frontier stored with checkpoint `cp`, if it gives the signed root."""
    row = conn.execute(
        "SELECT frontier FROM checkpoints WHERE tree_size = ?", (cp.tree_size,)
    ).fetchone()
    try:
        frontier = None if row is None else MerkleFrontier.decode(cp.tree_size, row[0])
    except ValueError:
        return None
    return frontier if frontier is not None and frontier.root().hex() == cp.root else None


def _grown(frontier: MerkleFrontier, leaves: list[bytes]) -> MerkleFrontier:
    for leaf in leaves:
        frontier.append(leaf)
    return frontier
