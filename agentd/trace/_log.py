"""The durable decision log: an append-only, hash-chained, checkpoint-signed SQLite file.

Writing. `append_batch` redacts the records (when a `Redactor` is given), drops those whose id is
already stored or repeated in the batch, chains and inserts the rest in one transaction, and
returns after COMMIT: acknowledge a message to its sender only after it returns. With
`synchronous="NORMAL"` (the default) a committed batch survives a crash of the process but the
last batches may be lost on power failure; `"FULL"` syncs the WAL on every commit.

Checkpoints. In the transaction of the first batch that brings the unsigned records to
`checkpoint_every` or more, on `checkpoint()` (which `LogWriter` calls when the newest checkpoint is
`checkpoint_interval_s` old and records came since), and on `close()`, the log signs (log id, tree
size, Merkle root, chain head, time) with the Ed25519 key at `signing_key_path` (created on first
use). Records after the last checkpoint are protected by the hash chain only, until the next one.
The Merkle tree covers every record ever appended, pruned ones included (see `_merkle` and
`_retention`); the file layout is described in `_schema`, the id index in `_keyindex`.

Duplicates. A record whose id is stored is dropped, so redelivered messages are harmless; once
retention deleted a record, a late duplicate of it would be stored again.

Threads. The log owns one SQLite connection, guarded by a lock: every method may be called from
any thread and writes run one at a time. The async recorder should call `append_batch` through
`anyio.to_thread.run_sync`. `get`, `find`, `verify` and `export` open their own read-only
connection (a snapshot in WAL mode; the read side lives in `_query`) so a long query or audit
does not hold up appends; `prove` only takes the lock to sign a checkpoint when none covers the
record yet.

Opening an existing log replays the records after the last checkpoint and refuses
(`DecisionLogDamaged`) when they do not chain, when records the checkpoint covers are gone, or
when the key does not match the one that signed the checkpoints: the writer never signs over a
log it cannot vouch for.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from ._anchor import WitnessEntry, check_log_extends
from ._errors import DecisionLogDamaged, DecisionLogError
from ._keyindex import BLOCK_SIZE, record_key_digests
from ._keys import load_or_create_signing_key
from ._proof import InclusionProof, build_inclusion_proof
from ._query import LoggedRecord, export_lines, find_records, get_record
from ._record import DecisionRecord
from ._redact import Redactor
from ._replay import replay_leaves, start_state
from ._retention import PruneResult, prune_log
from ._schema import (
    Checkpoint,
    connect,
    create_schema,
    load_checkpoints,
    load_retention,
)
from ._verify import VerifyReport, verify_log
from ._wire import WireRecord
from ._witness_proofs import WitnessProofs
from ._writer import ChainState, rollback, sign_checkpoint, write_batch
from .verifier import key_id

__all__ = ["AppendResult", "DecisionLog"]

_NEVER = 1 << 62  # checkpoint_every while signing is held


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What one `append_batch` stored: `appended` new records, `duplicates` dropped by id
    (`held`: the ids the log held before; the others are repeats within the batch)."""

    appended: int
    duplicates: int
    tree_size: int
    held: frozenset[str] = frozenset()


class DecisionLog:
    """Append-only decision log in one SQLite file; see the module docstring for guarantees."""

    def __init__(
        self,
        path: Path | str,
        *,
        signing_key_path: Path | str,
        checkpoint_every: int = 1000,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        redactor: Redactor | None = None,
        anchored: bool = False,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = Path(path)
        self.checkpoint_every = checkpoint_every
        self.redactor = redactor
        self._key = load_or_create_signing_key(Path(signing_key_path))
        self.public_key = self._key.public_key()
        self.key_id = key_id(self.public_key)
        self._lock = threading.Lock()
        self._closed = False
        # anchored: sign nothing until `anchor()` has checked the file against the checkpoint
        # kept outside it (or `anchor(None)` said there is none yet)
        self._held = anchored
        self._refusal: DecisionLogDamaged | None = None
        self._conn = connect(self.path, synchronous=synchronous)
        try:
            self.log_id = create_schema(self._conn, uuid.uuid4().hex)
            self._proofs = WitnessProofs(self.path, self.log_id, self.public_key)
            self._state = self._load_state()
        except BaseException:
            self._conn.close()
            raise

    def _load_state(self) -> ChainState:
        conn = self._conn
        checkpoints = load_checkpoints(conn, self.log_id)
        if checkpoints and checkpoints[-1].checkpoint.key_id != self.key_id:
            raise DecisionLogError(
                f"{self.path} was signed by key {checkpoints[-1].checkpoint.key_id}, but the"
                f" signing key file holds {self.key_id}: restore the original key file"
            )
        retention = load_retention(conn)
        pruned_to = 0 if retention is None else retention.pruned_to
        (last,) = conn.execute("SELECT max(seq) FROM records").fetchone()
        size = pruned_to if last is None else int(last)
        latest = checkpoints[-1] if checkpoints else None
        if latest is not None and latest.checkpoint.tree_size > size:
            raise DecisionLogDamaged(
                f"records {size + 1}..{latest.checkpoint.tree_size} are missing from {self.path}"
                " although a checkpoint covers them (truncated)",
                seq=size + 1,
            )
        frontier, chain = start_state(checkpoints, size, self.log_id, self.public_key, pruned_to)
        for replayed in replay_leaves(conn, frontier.size, chain, size):
            frontier.append(replayed.leaf)
            chain = replayed.chain
        checkpointed = 0 if latest is None else latest.checkpoint.tree_size
        block_keys: set[int] = set()
        for run_id, conversation_id, trace_id in conn.execute(
            "SELECT run_id, conversation_id, trace_id FROM records WHERE seq > ?",
            (size - size % BLOCK_SIZE,),
        ):
            block_keys.update(record_key_digests(run_id, conversation_id, trace_id))
        return ChainState(
            frontier, chain, checkpointed, block_keys, None if latest is None else latest.checkpoint
        )

    # -- writing ------------------------------------------------------------------------------

    def append_batch(self, records: Iterable[DecisionRecord | WireRecord]) -> AppendResult:
        """Store records in one transaction; return once committed.

        A `WireRecord` (checked text from a worker) is stored verbatim unless the redactor
        would change it; then it is parsed and redacted like any record.
        """
        batch: list[DecisionRecord | WireRecord] = list(records)
        redactor = self.redactor
        if redactor is not None:
            batch = [
                (
                    redactor.redact(r)
                    if isinstance(r, DecisionRecord)
                    else r
                    if redactor.leaves_unchanged(r.body)
                    else redactor.redact(r.to_record())
                )
                for r in batch
            ]
        with self._lock:
            self._check_open()
            if self._refusal is not None:
                raise self._refusal
            try:
                appended, duplicates, held = write_batch(
                    self._conn,
                    self._state,
                    batch,
                    sign=self._sign,
                    log_id=self.log_id,
                    checkpoint_every=_NEVER if self._held else self.checkpoint_every,
                )
            except DecisionLogDamaged as exc:
                self._refusal = exc  # rewritten under the writer: never sign over it
                raise
            return AppendResult(appended, duplicates, self._state.frontier.size, held)

    def append(self, record: DecisionRecord) -> AppendResult:
        """Store one record (a batch of one)."""
        return self.append_batch([record])

    def checkpoint(self) -> Checkpoint | None:
        """Sign the current tree if records were added since the last checkpoint.

        Returns the latest checkpoint (None while the log is empty).
        """
        with self._lock:
            self._check_open()
            return self._checkpoint_locked()

    def _checkpoint_locked(self) -> Checkpoint | None:
        state = self._state
        if state.frontier.size > state.checkpointed and not self._held and self._refusal is None:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cp = sign_checkpoint(
                    self._conn, state.frontier, state.chain, self._sign, self.log_id
                )
                self._conn.execute("COMMIT")
            except BaseException:
                rollback(self._conn)
                raise
            state.checkpointed, state.latest = cp.tree_size, cp
            return cp
        return state.latest

    # -- the anchor outside the file ------------------------------------------------------------

    @property
    def last_checkpoint(self) -> Checkpoint | None:
        """The latest signed checkpoint (None while there is none)."""
        return self._state.latest

    @property
    def held(self) -> bool:
        """Signing waits for `anchor()` (an anchored log not checked yet)."""
        return self._held

    @property
    def unsigned(self) -> int:
        """Records appended since the latest checkpoint."""
        return self._state.frontier.size - self._state.checkpointed

    def anchor(self, anchored: Checkpoint | None) -> None:
        """Check the file against the last checkpoint published outside it, then allow signing.

        Raises DecisionLogDamaged (and keeps refusing to write or sign) when the records do not
        give `anchored`'s root: the file was rewritten, truncated or replaced. None: nothing was
        published yet (a new log, or anchoring newly turned on): the file is taken as it is.
        """
        with self._lock:
            self._check_open()
            if anchored is not None:
                self._conn.execute("BEGIN")
                try:
                    retention = load_retention(self._conn)
                    check_log_extends(
                        self._conn,
                        anchored,
                        log_id=self.log_id,
                        public_key=self.public_key,
                        checkpoints=load_checkpoints(self._conn, self.log_id),
                        size=self._state.frontier.size,
                        pruned_to=0 if retention is None else retention.pruned_to,
                    )
                except DecisionLogDamaged as exc:
                    self._refusal = exc
                    raise
                finally:
                    self._conn.execute("ROLLBACK")
            self._held = False
            # from now on keep the leaves the next consistency proofs need
            self._state.leaves, self._state.leaves_base = [], self._state.frontier.size

    def witness_entry(self, previous: Checkpoint | None, current: Checkpoint) -> WitnessEntry:
        """`current` with the consistency proof from `previous` (both signed by this log), for
        publishing; see `WitnessProofs` (DecisionLogDamaged if the records no longer give both
        roots)."""
        with self._lock:
            self._check_open()
            return self._proofs.entry(self._conn, self._state, previous, current)

    def _sign(self, message: bytes) -> tuple[str, str]:
        return self._key.sign(message).hex(), self.key_id

    def prune(
        self,
        *,
        max_age_s: float | None = None,
        max_records: int | None = None,
        now: float | None = None,
    ) -> PruneResult:
        """Delete the oldest records by age and/or count, keeping the log verifiable.

        Cuts at the longest prefix of records that are all older than `max_age_s` (or that
        leaves at most `max_records`), signs a checkpoint at exactly that size (its frontier is
        where later verification starts) and a retention statement, then deletes the prefix.
        """
        with self._lock:
            self._check_open()
            if self._held or self._refusal is not None:
                raise DecisionLogError(
                    f"{self.path} is not anchored (or refused): retention waits for the anchor"
                )
            result = prune_log(
                self._conn,
                self._state,
                self.log_id,
                self.public_key,
                self._sign,
                max_age_s=max_age_s,
                max_records=max_records,
                now=time.time() if now is None else now,
            )
            checkpoints = load_checkpoints(self._conn, self.log_id)
            self._state.latest = checkpoints[-1].checkpoint if checkpoints else None
            return result

    # -- reading ------------------------------------------------------------------------------

    @property
    def tree_size(self) -> int:
        """Number of records ever appended (pruned ones included)."""
        return self._state.frontier.size

    def get(self, record_id: str) -> LoggedRecord | None:
        """The stored record with this id, if it is (still) in the log."""
        self._check_open()
        return get_record(self.path, record_id)

    def find(
        self,
        *,
        run_id: str | None = None,
        conversation_id: str | None = None,
        trace_id: str | None = None,
        agent: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 1000,
    ) -> list[LoggedRecord]:
        """Records matching every given filter, oldest first, at most `limit`; see
        `find_records`."""
        self._check_open()
        return find_records(
            self.path,
            tree_size=self.tree_size,
            run_id=run_id,
            conversation_id=conversation_id,
            trace_id=trace_id,
            agent=agent,
            kind=kind,
            since=since,
            until=until,
            limit=limit,
        )

    def export(self, since: float | None = None, until: float | None = None) -> Iterator[str]:
        """JSON lines, oldest first, `since` inclusive, `until` exclusive; see `export_lines`."""
        self._check_open()
        return export_lines(self.path, since=since, until=until)

    def verify(
        self,
        from_seq: int | None = None,
        to_seq: int | None = None,
        witness: Sequence[WitnessEntry] = (),
    ) -> VerifyReport:
        """Verify the file against this log's key and the checkpoints published outside it;
        see `verify_log`."""
        self._check_open()
        return verify_log(
            self.path, [self.public_key], from_seq=from_seq, to_seq=to_seq, witness=witness
        )

    def prove(self, record_id: str, *, tree_size: int | None = None) -> InclusionProof:
        """An inclusion proof of `record_id` against the latest (or the given) checkpoint.

        Signs a checkpoint first when none covers the record yet.
        """
        with self._lock:
            self._check_open()
            row = self._conn.execute(
                "SELECT seq FROM records WHERE id = ?", (record_id,)
            ).fetchone()
            if row is not None and tree_size is None and int(row[0]) > self._state.checkpointed:
                self._checkpoint_locked()
        reader = connect(self.path, read_only=True)
        try:
            return build_inclusion_proof(reader, self.log_id, self.public_key, record_id, tree_size)
        finally:
            reader.close()

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Sign a final checkpoint and close; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            try:
                self._checkpoint_locked()
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DecisionLogError(f"the decision log {self.path} is closed")
