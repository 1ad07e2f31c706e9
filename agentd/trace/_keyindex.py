"""Block key filters: the write-cheap index behind queries by run, conversation and trace id.

Why not three SQLite indexes: run, conversation and trace ids are random, so each new record
lands on a different leaf page of each index, and WAL mode writes every page a transaction
dirtied in full. Measured here with 100-record transactions of ~1 KB records, three such indexes
made inserts 2.5-3 times slower than the plain table, and the gap grows with the log.

Instead the records are cut into blocks of `BLOCK_SIZE` consecutive seqs. When a block is full,
the transaction that fills it stores one row in `key_blocks`: the sorted, distinct 32-bit CRC
digests of its records' run, conversation and trace ids (each kind of id with its own CRC seed),
packed little-endian, about 10 bytes per record. A query reads these rows, keeps the blocks whose
digests hold every id asked for, and scans only those seq ranges plus the block still filling,
filtering on the real columns: a digest collision (about one block in a million per query at
3,000 ids a block) costs a wasted block scan, never a wrong answer. CRC32 is cheap enough for the
write path, which computes three digests per record. The ids are unindexed columns of the records
table, so the scan of a candidate block is a rowid range read.

The filters are derived data, not evidence: `verify` does not read them, and a missing block row
only makes that block a candidate for every query.
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from collections.abc import Iterable, Sequence

__all__ = [
    "BLOCK_SIZE",
    "KEY_SEEDS",
    "block_filter",
    "candidate_ranges",
    "key_digest",
    "record_key_digests",
]

BLOCK_SIZE = 1024
_DIGEST_SIZE = 4
# Distinct CRC seeds keep a run id from matching a conversation id with the same text.
_SEEDS = {"r": 0x52554E00, "c": 0x434F4E00, "t": 0x54524300}
KEY_SEEDS = _SEEDS
"""CRC seeds by id kind, for the writer's inlined `record_key_digests`."""
_RUN, _CONVERSATION, _TRACE = _SEEDS["r"], _SEEDS["c"], _SEEDS["t"]


def key_digest(kind: str, value: str) -> int:
    """Digest of one id: kind "r" (run), "c" (conversation) or "t" (trace)."""
    return zlib.crc32(value.encode(), _SEEDS[kind])


def record_key_digests(
    run_id: str | None, conversation_id: str | None, trace_id: str | None
) -> list[int]:
    """The index digests of one record."""
    out = []
    if run_id is not None:
        out.append(zlib.crc32(run_id.encode(), _RUN))
    if conversation_id is not None:
        out.append(zlib.crc32(conversation_id.encode(), _CONVERSATION))
    if trace_id is not None:
        out.append(zlib.crc32(trace_id.encode(), _TRACE))
    return out


def block_filter(digests: Iterable[int]) -> bytes:
    """The stored form of a block's digest set."""
    distinct = sorted(set(digests))
    return struct.pack(f"<{len(distinct)}I", *distinct)


def _holds(blob: bytes, digest: bytes) -> bool:
    at = blob.find(digest)
    while at != -1:
        if at % _DIGEST_SIZE == 0:
            return True
        at = blob.find(digest, at + 1)
    return False


def candidate_ranges(
    conn: sqlite3.Connection, digests: Sequence[int], first_seq: int, size: int
) -> list[tuple[int, int]]:
    """Inclusive seq ranges within [first_seq, size] that may hold records with every id."""
    if first_seq > size:
        return []
    packed = [struct.pack("<I", d) for d in digests]
    first_block = (first_seq - 1) // BLOCK_SIZE
    full_blocks = size // BLOCK_SIZE
    stored = dict(
        conn.execute(
            "SELECT block, digests FROM key_blocks WHERE block >= ? AND block < ?",
            (first_block, full_blocks),
        ).fetchall()
    )
    ranges: list[tuple[int, int]] = []

    def add(lo: int, hi: int) -> None:
        lo = max(lo, first_seq)
        if ranges and ranges[-1][1] + 1 >= lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))

    for block in range(first_block, full_blocks):
        blob = stored.get(block)
        if blob is None or all(_holds(blob, d) for d in packed):
            add(block * BLOCK_SIZE + 1, (block + 1) * BLOCK_SIZE)
    if full_blocks * BLOCK_SIZE < size:
        add(full_blocks * BLOCK_SIZE + 1, size)
    return ranges
