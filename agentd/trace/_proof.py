"""Inclusion proofs: `agentctl audit prove ID`.

A proof says "record R is leaf i of the tree of size n whose root the log signed". It carries the
record itself, the audit path, the signed checkpoint and the signer's public key, as one JSON
object that `agentd.trace.verifier` checks with the standard library and `cryptography` only.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, JsonValue

from . import verifier as verifier_module
from ._errors import DecisionLogDamaged, DecisionLogError
from ._merkle import MerkleFrontier, consistency_path, inclusion_path
from ._replay import replay_leaves, start_state
from ._schema import Checkpoint, load_checkpoints, load_retention
from .verifier import (
    PROOF_VERSION,
    ProofVerdict,
    leaf_hash,
    root_from_inclusion_path,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "InclusionProof",
    "build_consistency_proof",
    "build_inclusion_proof",
    "checked_consistency",
    "verifier_source",
]


def verifier_source() -> str:
    """The standalone verifier's source, to hand to an auditor with a proof."""
    return Path(verifier_module.__file__).read_text(encoding="utf-8")


class InclusionProof(BaseModel):
    """Proof that one record is in the log under a signed checkpoint (JSON-serializable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = PROOF_VERSION
    log_id: str
    record_id: str
    record: str
    """The record's exact stored body (JSON text); its bytes are the Merkle leaf."""
    leaf_index: int
    tree_size: int
    audit_path: list[str]
    checkpoint: dict[str, JsonValue]
    public_key: str
    """The signer's raw Ed25519 public key, hex; pin it from a trusted copy when verifying."""

    def to_json(self) -> str:
        """The proof as indented JSON, the file `agentctl audit prove` writes."""
        return json.dumps(
            self.model_dump(mode="json"), indent=2, sort_keys=True, ensure_ascii=False
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> InclusionProof:
        return cls.model_validate_json(text)

    def verify(self, public_key: Ed25519PublicKey | None = None) -> ProofVerdict:
        """Check this proof with the standalone verifier."""
        return verify_inclusion(self.model_dump(mode="json"), None, public_key)


def build_inclusion_proof(
    conn: sqlite3.Connection,
    log_id: str,
    public_key: Ed25519PublicKey,
    record_id: str,
    tree_size: int | None = None,
) -> InclusionProof:
    """Prove `record_id` against the checkpoint at `tree_size` (default: the latest one).

    Reads in one transaction on `conn`. Raises DecisionLogError when the record is unknown or
    pruned or no checkpoint covers it yet, DecisionLogDamaged when the stored records do not give
    the signed root.
    """
    conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT seq, body FROM records WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            raise DecisionLogError(f"no record {record_id!r} in the log (unknown or pruned)")
        seq, body = int(row[0]), str(row[1])
        checkpoints = load_checkpoints(conn, log_id)
        target = _pick_checkpoint([c.checkpoint for c in checkpoints], seq, tree_size)
        retention = load_retention(conn)
        pruned_to = 0 if retention is None else retention.pruned_to
        index = seq - 1
        left, chain = start_state(checkpoints, index, log_id, public_key, pruned_to)
        leaves: list[bytes] = []
        for replayed in replay_leaves(conn, left.size, chain, target.tree_size):
            if replayed.seq <= index:
                left.append(replayed.leaf)
            else:
                leaves.append(replayed.leaf)
    finally:
        conn.execute("ROLLBACK")
    leaf = leaf_hash(body.encode("utf-8"))
    if not leaves or leaves[0] != leaf:
        raise DecisionLogDamaged(f"record {seq} changed while proving it", seq=seq)
    path = inclusion_path(left, leaves, target.tree_size)
    if root_from_inclusion_path(index, target.tree_size, leaf, path).hex() != target.root:
        raise DecisionLogDamaged(
            f"records up to {target.tree_size} do not give the root signed for that size;"
            " run `agentctl audit verify`"
        )
    raw_key = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return InclusionProof(
        log_id=log_id,
        record_id=record_id,
        record=body,
        leaf_index=index,
        tree_size=target.tree_size,
        audit_path=[p.hex() for p in path],
        checkpoint=target.to_json_object(),
        public_key=raw_key.hex(),
    )


def build_consistency_proof(
    conn: sqlite3.Connection,
    log_id: str,
    public_key: Ed25519PublicKey,
    old: Checkpoint,
    new: Checkpoint,
) -> tuple[list[bytes], MerkleFrontier]:
    """RFC 6962 consistency proof from checkpoint `old` to `new`, from the stored records, and
    the Merkle frontier at `new`.

    Raises DecisionLogDamaged when the records no longer give `old`'s root (then the log does
    not extend the checkpoint it signed) or `new`'s.
    """
    checkpoints = load_checkpoints(conn, log_id)
    retention = load_retention(conn)
    pruned_to = 0 if retention is None else retention.pruned_to
    frontier, chain = start_state(checkpoints, old.tree_size, log_id, public_key, pruned_to)
    base = frontier.size
    leaves: list[bytes] = []
    for replayed in replay_leaves(conn, frontier.size, chain, new.tree_size):
        if replayed.seq <= old.tree_size:
            frontier.append(replayed.leaf)
        else:
            leaves.append(replayed.leaf)
    if frontier.root().hex() != old.root:
        raise DecisionLogDamaged(
            f"records {base + 1}..{old.tree_size} no longer give the root signed at tree size"
            f" {old.tree_size}: the file was rewritten after it was signed",
            seq=base + 1,
        )
    return checked_consistency(frontier, leaves, old, new), _extended(frontier, leaves)


def _extended(frontier: MerkleFrontier, leaves: list[bytes]) -> MerkleFrontier:
    grown = frontier.copy()
    for leaf in leaves:
        grown.append(leaf)
    return grown


def checked_consistency(
    frontier: MerkleFrontier, leaves: list[bytes], old: Checkpoint, new: Checkpoint
) -> list[bytes]:
    """The consistency proof from `old` (whose frontier is `frontier`) to `new` (`leaves`
    appended), checked against both signed roots: DecisionLogDamaged if it does not join them."""
    proof = consistency_path(frontier, leaves)
    failure = verify_consistency(
        old.tree_size, new.tree_size, bytes.fromhex(old.root), bytes.fromhex(new.root), proof
    )
    if failure is not None:
        raise DecisionLogDamaged(
            f"records {old.tree_size + 1}..{new.tree_size} do not give the root signed at tree"
            f" size {new.tree_size} ({failure}): the file was rewritten after it was signed",
            seq=old.tree_size + 1,
        )
    return proof


def _pick_checkpoint(checkpoints: list[Checkpoint], seq: int, tree_size: int | None) -> Checkpoint:
    if tree_size is not None:
        for cp in checkpoints:
            if cp.tree_size == tree_size:
                if tree_size < seq:
                    raise DecisionLogError(f"the checkpoint at {tree_size} precedes record {seq}")
                return cp
        raise DecisionLogError(f"no checkpoint at tree size {tree_size}")
    if not checkpoints or checkpoints[-1].tree_size < seq:
        raise DecisionLogError(f"no signed checkpoint covers record {seq} yet")
    return checkpoints[-1]
