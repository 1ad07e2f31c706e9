"""Anchoring the log outside its file: witnessed checkpoints and the checks made against them.

Whoever can write the log's file can rewrite a record, recompute the hash chain after it and
delete the checkpoints that covered it: what is left verifies on its own. So each checkpoint the
log signs is also kept where that writer cannot reach (the daemon's JetStream key-value bucket,
and the configured witnesses: a stream, a file on another mount), as a `WitnessEntry`: the signed
checkpoint plus an RFC 6962 consistency proof from the previous witnessed checkpoint. Then:

- the writer refuses to extend a log whose records do not give the root of the last checkpoint it
  published (`check_log_extends`, at startup; `DecisionLog` also checks the chain head before
  every write);
- a witness alone shows that the log only ever grew (`check_witness_chain`: each entry's
  signature, and each consistency proof between consecutive entries);
- verification with the witness (`verify_log(..., witness=...)`) checks that the file holds
  every witnessed checkpoint and that its records give each witnessed root, and names the first
  record that can be the changed one.

What remains: records appended after the last witnessed checkpoint can be truncated or rewritten
without trace (with the checkpoints covering them, if any were signed and not yet published).
The daemon's log writer signs a checkpoint at least every `[trace].checkpoint_interval_s` while
records arrive and the daemon publishes it at once, so that window is bounded by that interval.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._errors import DecisionLogDamaged
from ._replay import replay_leaves, start_state
from ._schema import Checkpoint, StoredCheckpoint
from .verifier import key_id, verify_checkpoint_signature, verify_witness

__all__ = ["WitnessEntry", "check_log_extends", "check_witness_chain", "parse_witness_lines"]

WITNESS_FORMAT = "agentd-witness/1"


@dataclass(frozen=True, slots=True)
class WitnessEntry:
    """A signed checkpoint as published outside the log, with the consistency proof from the
    checkpoint published before it (`previous_size` 0 and no proof for the first)."""

    checkpoint: Checkpoint
    previous_size: int = 0
    consistency: tuple[bytes, ...] = ()

    def to_json(self) -> str:
        """One line of JSON (a witness file holds one entry per line)."""
        return json.dumps(
            {
                "format": WITNESS_FORMAT,
                "checkpoint": self.checkpoint.to_json_object(),
                "previous_size": self.previous_size,
                "consistency": [node.hex() for node in self.consistency],
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> WitnessEntry:
        """Parse one entry; ValueError says what is wrong with it."""
        try:
            obj = json.loads(text)
            if not isinstance(obj, dict) or obj.get("format") != WITNESS_FORMAT:
                raise ValueError(f"not a {WITNESS_FORMAT} entry")
            cp: dict[str, Any] = obj["checkpoint"]
            checkpoint = Checkpoint(
                str(cp["log_id"]),
                int(cp["tree_size"]),
                str(cp["root"]),
                str(cp["chain_head"]),
                int(cp["signed_at_us"]),
                str(cp["key_id"]),
                str(cp["signature"]),
            )
            proof = tuple(bytes.fromhex(str(h)) for h in obj.get("consistency") or ())
            return cls(checkpoint, int(obj.get("previous_size") or 0), proof)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed witness entry: {exc}") from None


def parse_witness_lines(lines: Iterable[str | bytes], where: str) -> list[WitnessEntry]:
    """Entries of a witness file (blank lines skipped); ValueError names the bad line."""
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(WitnessEntry.from_json(line))
        except ValueError as exc:
            raise ValueError(f"{where}, line {number}: {exc}") from None
    return entries


def check_witness_chain(
    entries: Sequence[WitnessEntry], keys: dict[str, Ed25519PublicKey], log_id: str | None = None
) -> tuple[int | None, str] | None:
    """Check witnessed checkpoints on their own (see `verifier.verify_witness`): signatures by
    a trusted key, one log, and each consistency proof from the entry before.

    Returns None when they hold, else (the tree size of the first bad entry, why).
    """
    return verify_witness([json.loads(e.to_json()) for e in entries], keys, log_id)


def check_log_extends(
    conn: sqlite3.Connection,
    anchor: Checkpoint,
    *,
    log_id: str,
    public_key: Ed25519PublicKey,
    checkpoints: Sequence[StoredCheckpoint],
    size: int,
    pruned_to: int,
) -> None:
    """Raise DecisionLogDamaged unless the log's records give `anchor`, the last checkpoint
    published outside the file (`size`: the records the file holds, already checked to chain).

    The message names the anchored checkpoint and the first record that can be the changed one:
    the first after the latest checkpoint still in the file below the anchor (records between
    two checkpoints cannot be told apart by a root).
    """
    where = f"the checkpoint signed at tree size {anchor.tree_size} ({_when(anchor)})"
    if anchor.log_id != log_id:
        raise DecisionLogDamaged(
            f"{where} is of log {anchor.log_id}, but this file is log {log_id}: the decision"
            " log file was replaced (or another daemon with the same [cluster].node anchors its"
            " log in this NATS: give each its own node name)"
        )
    failure = verify_checkpoint_signature(anchor.to_json_object(), log_id, public_key)
    if failure is not None:
        raise DecisionLogDamaged(f"{where}: {failure} (key {key_id(public_key)})")
    if anchor.tree_size > size:
        raise DecisionLogDamaged(
            f"records {size + 1}..{anchor.tree_size} are missing although {where} covers them:"
            " the log was truncated",
            seq=size + 1,
        )
    if anchor.tree_size <= pruned_to:
        return  # those records are gone by retention; the signed boundary is checked on open
    frontier, chain = start_state(checkpoints, anchor.tree_size, log_id, public_key, pruned_to)
    base = frontier.size
    for replayed in replay_leaves(conn, base, chain, anchor.tree_size):
        frontier.append(replayed.leaf)
        chain = replayed.chain
    if frontier.root().hex() == anchor.root and chain.hex() == anchor.chain_head:
        return
    first = base + 1
    row = conn.execute("SELECT id FROM records WHERE seq = ?", (first,)).fetchone()
    named = f"record {first}" + ("" if row is None else f" (id {row[0]})")
    raise DecisionLogDamaged(
        f"the log does not extend {where}: records {first}..{anchor.tree_size} do not give its"
        f" root. A record in that range was rewritten and the chain after it recomputed; {named}"
        " is the first that can be the changed one. The writer refuses to extend or sign this"
        " log: restore decisions.db from a copy, or run `agentctl audit verify --log FILE`",
        seq=first,
    )


def _when(cp: Checkpoint) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cp.signed_at_us / 1e6))
