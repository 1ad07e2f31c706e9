"""Full verification of a decision-log file: `agentctl audit verify`.

`verify_log` reads the file through its own read-only connection inside one read transaction
(a consistent snapshot, while the daemon keeps appending) and stops at the first problem, in log
order. For each record it checks, in this order:

1. its seq follows the previous one (a gap names the first missing seq: deleted records);
2. its `prev_hash` equals the previous record's hash (reordered or renumbered records);
3. its `hash` equals SHA-256(prev_hash || leaf hash of the body) (a changed body or hash; the next
   record's `prev_hash` tells which of the two was changed);
4. the indexed columns (`id`, `ts`, `kind`, `agent`, `run_id`, `conversation_id`, `trace_id`)
   equal the body's fields.

At each signed checkpoint it checks the signature (key known, message intact), that the root and
chain head recomputed from the records equal the signed ones, and that the stored frontier is the
recomputed one. A root mismatch behind an intact chain means records were rewritten and their
hashes recomputed: the report then names the first record after the last checkpoint that
matched, the earliest record that can be the changed one. After the last record, a signed
checkpoint beyond it means the log was truncated. With retention, verification starts from the
checkpoint at `pruned_to`, whose signature, frontier and the signed retention statement are checked
first.

What a local check cannot see: an attacker who removes the newest records *and* the checkpoints
covering them, or who rewrites a record, recomputes the chain after it and deletes the
checkpoints that covered it, or who re-signs everything with a new key, leaves a log that
verifies. Pin the public key, and pass the checkpoints published outside the file (`witness`:
the daemon's anchor and its witnesses, see `_anchor`): they are checked on their own first
(signatures, RFC 6962 consistency between consecutive ones), then the file must hold each of
them (a missing one was deleted) and its records must give each one's root and chain head (the
report names the first record after the last checkpoint that matched, as above), and no
witnessed checkpoint may lie beyond the last record (truncated).

`from_seq`/`to_seq` narrow the check: it starts at the nearest checkpoint at or before `from_seq`
(so a few records before it are checked too) and stops after `to_seq`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._anchor import WitnessEntry, check_witness_chain
from ._merkle import MerkleFrontier
from ._schema import (
    ZERO_HASH,
    StoredCheckpoint,
    connect,
    load_checkpoints,
    load_log_id,
    load_retention,
)
from .verifier import key_id, leaf_hash, retention_message, verify_checkpoint_signature

__all__ = ["VerifyReport", "verify_log"]

_COLUMNS = ("id", "ts", "kind", "agent", "run_id", "conversation_id", "trace_id")


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Result of `verify_log`.

    When `ok` is false, `reason` says what failed; `first_bad_seq`/`first_bad_id` name the first
    bad record (id None when that record is missing), or `bad_checkpoint` names the tree size of
    a checkpoint that fails on its own. `checked` counts records whose hashes were recomputed;
    `signed_through` is the largest tree size whose signed checkpoint matched the records.
    """

    ok: bool
    reason: str
    checked: int = 0
    checkpoints_checked: int = 0
    first_bad_seq: int | None = None
    first_bad_id: str | None = None
    bad_checkpoint: int | None = None
    signed_through: int = 0
    witnessed_through: int = 0
    """The largest tree size of a checkpoint published outside the file that was checked."""

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready fields (what `agentctl audit verify --json` prints)."""
        return dataclasses.asdict(self)


class _Bad(Exception):
    def __init__(
        self,
        reason: str,
        *,
        seq: int | None = None,
        record_id: str | None = None,
        checkpoint: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason, self.seq, self.record_id, self.checkpoint = reason, seq, record_id, checkpoint


def verify_log(
    path: Path,
    public_keys: Iterable[Ed25519PublicKey],
    *,
    from_seq: int | None = None,
    to_seq: int | None = None,
    witness: Sequence[WitnessEntry] = (),
) -> VerifyReport:
    """Verify the log file at `path` against the trusted checkpoint signing keys and the
    checkpoints published outside it (`witness`, in any order)."""
    run = _Run({key_id(k): k for k in public_keys}, witness)
    try:
        conn = connect(path, read_only=True)
    except sqlite3.Error as exc:
        return VerifyReport(False, f"cannot open {path}: {exc}")
    try:
        conn.execute("BEGIN")
        run.verify(conn, from_seq, to_seq)
    except _Bad as bad:
        return run.report(bad)
    except sqlite3.DatabaseError as exc:
        unreadable = _Bad(f"database unreadable after record {run.last}: {exc}", seq=run.last + 1)
        return run.report(unreadable)
    finally:
        conn.close()
    reason = f"{run.checked} records and {run.checkpoints} checkpoints verify"
    if witness:
        reason += f", consistent with {len(run.external)} witnessed checkpoints"
    return VerifyReport(
        True,
        reason,
        run.checked,
        run.checkpoints,
        signed_through=run.signed,
        witnessed_through=max(run.external, default=0),
    )


class _Run:
    def __init__(self, keys: dict[str, Ed25519PublicKey], witness: Sequence[WitnessEntry]) -> None:
        self.keys = keys
        self.checked = self.checkpoints = self.signed = self.last = 0
        self.log_id = ""
        self.witness = witness
        self.external = {e.checkpoint.tree_size: e for e in witness}

    def report(self, bad: _Bad) -> VerifyReport:
        return VerifyReport(
            False,
            bad.reason,
            self.checked,
            self.checkpoints,
            bad.seq,
            bad.record_id,
            bad.checkpoint,
            self.signed,
        )

    def verify(self, conn: sqlite3.Connection, from_seq: int | None, to_seq: int | None) -> None:
        log_id = load_log_id(conn)
        if log_id is None:
            raise _Bad("not a decision log: the meta table has no log_id")
        self.log_id = log_id
        bad = check_witness_chain(self.witness, self.keys, log_id)
        if bad is not None:
            raise _Bad(bad[1], checkpoint=bad[0])
        checkpoints = load_checkpoints(conn, log_id)
        by_size = {c.checkpoint.tree_size: c for c in checkpoints}
        frontier, chain = MerkleFrontier(), ZERO_HASH
        retention = load_retention(conn)
        if retention is not None:
            key = self.keys.get(retention.key_id)
            message = retention_message(log_id, retention.pruned_to, retention.signed_at_us)
            if key is None or not _signature_ok(key, retention.signature, message):
                raise _Bad(
                    f"the retention statement (records 1..{retention.pruned_to} pruned)"
                    " is not signed by a trusted key"
                )
            anchor = by_size.get(retention.pruned_to)
            if anchor is None:
                raise _Bad(
                    f"no checkpoint at the pruned boundary {retention.pruned_to}",
                    checkpoint=retention.pruned_to,
                )
            frontier, chain = self.anchor(anchor)
        if from_seq is not None:
            starts = [c for c in checkpoints if frontier.size < c.checkpoint.tree_size < from_seq]
            if starts:
                frontier, chain = self.anchor(starts[-1])
        for stored in checkpoints:
            if stored.checkpoint.tree_size < frontier.size:
                self.check_signature(stored)
        self.last = frontier.size
        self.scan(conn, by_size, frontier, chain, to_seq)
        ends_before = to_seq is not None and to_seq <= self.last
        later = [c for c in checkpoints if c.checkpoint.tree_size > self.last]
        beyond = [size for size in self.external if size > self.last]
        if (
            beyond
            and not ends_before
            and (not later or min(beyond) <= later[0].checkpoint.tree_size)
        ):
            size = min(beyond)
            raise _Bad(
                f"records {self.last + 1}..{size} are missing: the checkpoint published outside"
                f" the log at tree size {size} covers them (the log was truncated)",
                seq=self.last + 1,
            )
        if later and not ends_before:
            self.check_signature(later[0])
            size = later[0].checkpoint.tree_size
            raise _Bad(
                f"records {self.last + 1}..{size} are missing: the checkpoint signed at tree"
                f" size {size} covers them (the log was truncated)",
                seq=self.last + 1,
            )

    def anchor(self, stored: StoredCheckpoint) -> tuple[MerkleFrontier, bytes]:
        """Start from a checkpoint: its signature and stored frontier must hold."""
        self.check_signature(stored)
        cp = stored.checkpoint
        try:
            frontier = MerkleFrontier.decode(cp.tree_size, stored.frontier)
        except ValueError:
            frontier = None
        if frontier is None or frontier.root().hex() != cp.root:
            raise _Bad(
                f"checkpoint at tree size {cp.tree_size}: its stored frontier does not"
                " give its signed root",
                checkpoint=cp.tree_size,
            )
        self.signed = max(self.signed, cp.tree_size)
        return frontier, bytes.fromhex(cp.chain_head)

    def check_signature(self, stored: StoredCheckpoint) -> None:
        cp = stored.checkpoint
        key = self.keys.get(cp.key_id)
        if key is None:
            raise _Bad(
                f"checkpoint at tree size {cp.tree_size} is signed by an untrusted key"
                f" {cp.key_id!r}",
                checkpoint=cp.tree_size,
            )
        failure = verify_checkpoint_signature(cp.to_json_object(), self.log_id, key)
        if failure is not None:
            raise _Bad(
                f"checkpoint at tree size {cp.tree_size}: {failure} (the checkpoint or"
                " the log id was edited)",
                checkpoint=cp.tree_size,
            )
        self.checkpoints += 1

    def scan(
        self,
        conn: sqlite3.Connection,
        by_size: dict[int, StoredCheckpoint],
        frontier: MerkleFrontier,
        chain: bytes,
        to_seq: int | None,
    ) -> None:
        sql = (
            "SELECT seq, id, ts, kind, agent, run_id, conversation_id, trace_id, body,"
            " prev_hash, hash FROM records WHERE seq > ?"
        )
        params: tuple[int, ...] = (frontier.size,)
        if to_seq is not None:
            sql, params = sql + " AND seq <= ?", (frontier.size, to_seq)
        rows = conn.execute(sql + " ORDER BY seq", params)
        good_size = frontier.size
        for row, following in _with_next(rows):
            seq, record_id, body, prev_hex, hash_hex = row[0], row[1], row[8], row[9], row[10]
            expected = self.last + 1
            if seq != expected:
                raise _Bad(
                    f"record {expected} is missing (the next stored record is {seq})", seq=expected
                )
            if not isinstance(body, str):
                raise _Bad("body is not text", seq=seq, record_id=_text(record_id))
            if prev_hex != chain.hex():
                what = f"record {seq - 1}" if seq - 1 > good_size else "the checkpoint before it"
                raise _Bad(
                    f"prev_hash does not link to the hash of {what} (records deleted,"
                    " reordered or renumbered)",
                    seq=seq,
                    record_id=_text(record_id),
                )
            leaf = leaf_hash(body.encode("utf-8"))
            computed = hashlib.sha256(chain + leaf).digest()
            if computed.hex() != hash_hex:
                if following is not None and following[9] == hash_hex:
                    why = "body altered: it no longer gives the record's hash"
                else:
                    why = "hash altered: it is not SHA-256(prev_hash || leaf hash of the body)"
                raise _Bad(why, seq=seq, record_id=_text(record_id))
            _check_columns(row)
            chain = computed
            frontier.append(leaf)
            self.checked += 1
            self.last = seq
            witnessed = self.external.get(seq)
            if witnessed is not None:
                self.check_witnessed(conn, witnessed, frontier, chain, good_size)
                if seq not in by_size:
                    raise _Bad(
                        f"the checkpoint signed at tree size {seq} is missing from the log,"
                        " although it was published outside it: deleted",
                        checkpoint=seq,
                    )
            stored = by_size.get(seq)
            if stored is not None:
                self.check_checkpoint(conn, stored, frontier, chain, good_size)
                good_size = seq

    def check_witnessed(
        self,
        conn: sqlite3.Connection,
        entry: WitnessEntry,
        frontier: MerkleFrontier,
        chain: bytes,
        good_size: int,
    ) -> None:
        cp = entry.checkpoint
        if cp.root != frontier.root().hex() or cp.chain_head != chain.hex():
            first = good_size + 1
            row = conn.execute("SELECT id FROM records WHERE seq = ?", (first,)).fetchone()
            raise _Bad(
                f"records {first}..{cp.tree_size} do not give the root of the checkpoint"
                f" published outside the log at tree size {cp.tree_size}: a record in this range"
                " was rewritten and the chain recomputed (and the checkpoints covering it"
                " deleted or re-signed)",
                seq=first,
                record_id=None if row is None else _text(row[0]),
            )

    def check_checkpoint(
        self,
        conn: sqlite3.Connection,
        stored: StoredCheckpoint,
        frontier: MerkleFrontier,
        chain: bytes,
        good_size: int,
    ) -> None:
        self.check_signature(stored)
        cp = stored.checkpoint
        if cp.root != frontier.root().hex() or cp.chain_head != chain.hex():
            first = good_size + 1
            row = conn.execute("SELECT id FROM records WHERE seq = ?", (first,)).fetchone()
            raise _Bad(
                f"records {first}..{cp.tree_size} do not give the root signed at tree size"
                f" {cp.tree_size}: a record in this range was rewritten and the chain recomputed",
                seq=first,
                record_id=None if row is None else _text(row[0]),
            )
        if stored.frontier != frontier.encode():
            raise _Bad(
                f"checkpoint at tree size {cp.tree_size}: stored frontier altered",
                checkpoint=cp.tree_size,
            )
        self.signed = cp.tree_size


def _check_columns(row: tuple[Any, ...]) -> None:
    seq, record_id, body = row[0], row[1], row[8]
    try:
        fields = json.loads(body)
    except ValueError:
        raise _Bad("body is not JSON", seq=seq, record_id=_text(record_id)) from None
    if not isinstance(fields, dict):
        raise _Bad("body is not a JSON object", seq=seq, record_id=_text(record_id))
    for index, name in enumerate(_COLUMNS, start=1):
        stored, expected = row[index], fields.get(name)
        if name == "ts":
            same = (
                isinstance(expected, int | float)
                and isinstance(stored, int | float)
                and float(stored) == float(expected)
            )
        else:
            same = stored == expected
        if not same:
            raise _Bad(
                f"column {name} ({stored!r}) does not match the body ({expected!r})",
                seq=seq,
                record_id=_text(fields.get("id", record_id)),
            )


def _signature_ok(key: Ed25519PublicKey, signature_hex: str, message: bytes) -> bool:
    try:
        key.verify(bytes.fromhex(signature_hex), message)
    except Exception:  # InvalidSignature, or a signature that is not hex
        return False
    return True


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _with_next(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Each row with the one after it (None for the last)."""
    it = iter(rows)
    current = next(it, None)
    while current is not None:
        following = next(it, None)
        yield current, following
        current = following
