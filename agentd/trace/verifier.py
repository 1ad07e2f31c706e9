"""Standalone verifier for agentd decision-log inclusion proofs.

This module depends on the Python standard library and `cryptography` only, so an auditor can
copy this one file and check a proof without installing agentd::

    python verifier.py proof.json --public-key decision-log.key.pub
    python -m agentd.trace.verifier proof.json --public-key decision-log.key.pub
    python verifier.py --witness agentd.jsonl --public-key decision-log.key.pub

It also defines the formats the log writes, so the log and every verifier agree on one source:

- **Record body**: the exact UTF-8 JSON text the log stored for a record. It is hashed verbatim,
  never re-serialized, so a verifier in any language needs no JSON canonicalization; a proof and
  an export carry the body as a JSON string.
- **Merkle tree**: RFC 6962 / RFC 9162 with SHA-256: leaf hash = SHA-256(0x00 || body),
  node hash = SHA-256(0x01 || left || right), the empty tree's root = SHA-256("").
- **Hash chain**: hash = SHA-256(prev_hash || leaf hash), the first prev_hash 32 zero bytes.
- **Checkpoint**: an Ed25519 signature over the UTF-8 text built by `checkpoint_message`: a header
  line, the log id, the tree size, the root (hex), the hash-chain head (hex) and the signing time
  in integer microseconds since the epoch, one per line. Integers and hex only, so any language can
  rebuild the exact bytes.
- **Key id**: the first 16 hex digits of SHA-256 over the raw 32-byte public key.
- **Witness entry** (one JSON line of a witness file): `{"format": "agentd-witness/1",
  "checkpoint": {...}, "previous_size": m, "consistency": [hex...]}`, the RFC 6962 / RFC 9162
  consistency proof from the checkpoint published before it (tree size m) to this one.

A proof is a JSON object: `{"version": 1, "log_id", "record_id", "record": "<body text>",
"leaf_index", "tree_size", "audit_path": [hex...], "checkpoint": {...}, "public_key": hex}`. It
verifies when the body's leaf hash and the audit path give the checkpoint's root for its tree
size, and the checkpoint's signature verifies under the public key. Pin the public key
(`--public-key`): a proof checked only against the key it carries shows consistency, not who
signed it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "CHECKPOINT_HEADER",
    "EMPTY_ROOT",
    "PROOF_VERSION",
    "RETENTION_HEADER",
    "ProofVerdict",
    "checkpoint_message",
    "key_id",
    "leaf_hash",
    "load_public_key",
    "main",
    "node_hash",
    "retention_message",
    "root_from_inclusion_path",
    "verify_consistency",
    "verify_witness",
    "verify_checkpoint_signature",
    "verify_inclusion",
]

PROOF_VERSION = 1
CHECKPOINT_HEADER = "agentd decision-log checkpoint v1"
RETENTION_HEADER = "agentd decision-log retention v1"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(body: bytes) -> bytes:
    """RFC 6962 leaf hash of one record body (its exact stored bytes)."""
    return hashlib.sha256(b"\x00" + body).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_path(
    leaf_index: int, tree_size: int, leaf: bytes, path: Sequence[bytes]
) -> bytes:
    """Compute the root implied by an inclusion path (RFC 9162, section 2.1.3.2).

    Raises ValueError when the path cannot belong to a tree of that size (wrong length, index
    out of range); the caller compares the returned root with a signed one.
    """
    if not 0 <= leaf_index < tree_size:
        raise ValueError(f"leaf index {leaf_index} is outside a tree of size {tree_size}")
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("audit path is shorter than the tree is deep")
    return r


def verify_consistency(
    first_size: int,
    second_size: int,
    first_root: bytes,
    second_root: bytes,
    proof: Sequence[bytes],
) -> str | None:
    """Check an RFC 6962 consistency proof (RFC 9162, section 2.1.4.2).

    Returns None when `proof` shows that the tree of `second_size` leaves with `second_root`
    extends the tree of `first_size` leaves with `first_root` (the first is a prefix of the
    second: nothing in it was changed or removed), else why not.
    """
    if not 0 <= first_size <= second_size:
        return f"tree size {second_size} is smaller than {first_size}: the log shrank"
    if first_size == second_size:
        if proof:
            return "a proof between equal tree sizes must be empty"
        return None if first_root == second_root else "equal tree sizes with different roots"
    if first_size == 0:
        return None if not proof else "a proof from the empty tree must be empty"
    path = list(proof)
    if first_size & (first_size - 1) == 0:  # a power of two: the first root is a node of the path
        path.insert(0, first_root)
    if not path:
        return "the consistency proof is empty"
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return "the consistency proof is longer than the trees are deep"
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return "the consistency proof is shorter than the trees are deep"
    if fr != first_root:
        return f"the proof does not give the root signed at tree size {first_size}"
    if sr != second_root:
        return f"the proof does not give the root signed at tree size {second_size}"
    return None


def checkpoint_message(
    log_id: str, tree_size: int, root_hex: str, chain_head_hex: str, signed_at_us: int
) -> bytes:
    """The exact bytes a checkpoint's Ed25519 signature covers."""
    lines = [CHECKPOINT_HEADER, log_id, str(int(tree_size)), root_hex, chain_head_hex]
    lines.append(str(int(signed_at_us)))
    return ("\n".join(lines) + "\n").encode("utf-8")


def retention_message(log_id: str, pruned_to: int, signed_at_us: int) -> bytes:
    """The bytes signed when records 1..pruned_to are removed by retention."""
    lines = [RETENTION_HEADER, log_id, str(int(pruned_to)), str(int(signed_at_us))]
    return ("\n".join(lines) + "\n").encode("utf-8")


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short, stable name of a public key: 16 hex digits of SHA-256 over its raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(data: str | bytes) -> Ed25519PublicKey:
    """Read an Ed25519 public key: PEM (SubjectPublicKeyInfo), 64 hex digits or 32 raw bytes."""
    raw = data.encode("ascii") if isinstance(data, str) else bytes(data)
    if raw.lstrip().startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(raw)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the PEM key is not an Ed25519 public key")
        return key
    if len(raw) == 32:
        return Ed25519PublicKey.from_public_bytes(raw)
    try:
        decoded = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError("public key is neither PEM nor 64 hex digits") from exc
    if len(decoded) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, got {len(decoded)}")
    return Ed25519PublicKey.from_public_bytes(decoded)


def verify_checkpoint_signature(
    checkpoint: dict[str, Any], log_id: str, public_key: Ed25519PublicKey
) -> str | None:
    """Check a checkpoint object's signature; return why it fails, or None when it verifies."""
    try:
        message = checkpoint_message(
            log_id,
            int(checkpoint["tree_size"]),
            str(checkpoint["root"]),
            str(checkpoint["chain_head"]),
            int(checkpoint["signed_at_us"]),
        )
        signature = bytes.fromhex(str(checkpoint["signature"]))
    except (KeyError, TypeError, ValueError) as exc:
        return f"checkpoint is malformed: {exc!r}"
    if checkpoint.get("key_id") != key_id(public_key):
        signer = checkpoint.get("key_id")
        return f"checkpoint was signed by key {signer!r}, not {key_id(public_key)}"
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return "checkpoint signature does not verify"
    return None


def verify_witness(
    entries: Sequence[dict[str, Any]],
    public_keys: dict[str, Ed25519PublicKey],
    log_id: str | None = None,
) -> tuple[int | None, str] | None:
    """Check checkpoints published outside the log on their own: each signed by a trusted key
    (`public_keys` by key id), one log (`log_id` when given), and each RFC 6962 consistency
    proof from the entry before it (entries `{"checkpoint", "previous_size", "consistency"}`,
    in any order). Returns None when they hold, else (tree size of the first bad one, why).
    """
    try:
        ordered = sorted(
            entries,
            key=lambda e: (int(e["checkpoint"]["tree_size"]), int(e["checkpoint"]["signed_at_us"])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"a witness entry is malformed: {exc!r}"
    previous: dict[str, Any] | None = None
    for entry in ordered:
        cp = entry["checkpoint"]
        size = int(cp["tree_size"])
        if log_id is not None and cp.get("log_id") != log_id:
            return size, (
                f"the witnessed checkpoint at tree size {size} is of log {cp.get('log_id')},"
                f" not of this log ({log_id}): the file was replaced"
            )
        key = public_keys.get(str(cp.get("key_id")))
        if key is None:
            return size, (
                f"the witnessed checkpoint at tree size {size} is signed by an untrusted key"
                f" {cp.get('key_id')!r}"
            )
        failure = verify_checkpoint_signature(cp, str(cp.get("log_id")), key)
        if failure is not None:
            return size, f"witnessed checkpoint at tree size {size}: {failure}"
        if previous is not None:
            old = int(previous["tree_size"])
            if old == size and previous["root"] != cp["root"]:
                return size, (
                    f"two checkpoints signed at tree size {size} with different roots: the log"
                    " was rewritten and signed again"
                )
            if int(entry.get("previous_size") or 0) == old < size:
                try:
                    proof = [bytes.fromhex(h) for h in entry.get("consistency") or ()]
                    failure = verify_consistency(
                        old,
                        size,
                        bytes.fromhex(previous["root"]),
                        bytes.fromhex(cp["root"]),
                        proof,
                    )
                except (TypeError, ValueError) as exc:
                    failure = f"malformed proof: {exc!r}"
                if failure is not None:
                    return size, (
                        f"the checkpoint at tree size {size} is not consistent with the one at"
                        f" {old}: {failure}"
                    )
        previous = cp
    return None


@dataclass(frozen=True, slots=True)
class ProofVerdict:
    """Outcome of checking one inclusion proof; `reason` says why it failed or what it showed."""

    ok: bool
    reason: str
    record_id: str | None = None
    leaf_index: int | None = None
    tree_size: int | None = None
    signed_at_us: int | None = None
    key_id: str | None = None
    key_pinned: bool = False


def _as_object(value: str | bytes | dict[str, Any], what: str) -> dict[str, Any]:
    parsed = json.loads(value) if isinstance(value, str | bytes) else value
    if not isinstance(parsed, dict):
        raise ValueError(f"{what} is not a JSON object")
    return parsed


def _body_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise ValueError("the record must be given as its exact body text, not as parsed JSON")


def verify_inclusion(
    proof_json: str | bytes | dict[str, Any],
    record_json: str | bytes | None = None,
    public_key: Ed25519PublicKey | str | bytes | None = None,
) -> ProofVerdict:
    """Check that a record is in the log under a signed checkpoint.

    `record_json` is the record's exact body text; it defaults to the body embedded in the proof.
    Pass the copy you hold (an export line's `body`, say) to check that copy. `public_key` pins
    the signer; without it the key embedded in the proof is used and the verdict says
    `key_pinned=False`.
    """
    try:
        proof = _as_object(proof_json, "proof")
        body = _body_bytes(record_json if record_json is not None else proof["record"])
        record = _as_object(body, "record")
        if proof.get("version") != PROOF_VERSION:
            return ProofVerdict(False, f"unsupported proof version {proof.get('version')!r}")
        checkpoint = _as_object(proof["checkpoint"], "checkpoint")
        leaf_index, tree_size = int(proof["leaf_index"]), int(proof["tree_size"])
        signed_size = int(checkpoint["tree_size"])
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        log_id = str(proof["log_id"])
        embedded = load_public_key(str(proof["public_key"]))
        pinned = (
            public_key
            if isinstance(public_key, Ed25519PublicKey) or public_key is None
            else load_public_key(public_key)
        )
    except (KeyError, TypeError, ValueError) as exc:
        return ProofVerdict(False, f"proof is malformed: {exc!r}")
    record_id = record.get("id") if isinstance(record.get("id"), str) else None
    signer = pinned if pinned is not None else embedded

    def verdict(ok: bool, reason: str) -> ProofVerdict:
        return ProofVerdict(
            ok,
            reason,
            record_id=record_id,
            leaf_index=leaf_index,
            tree_size=tree_size,
            signed_at_us=checkpoint.get("signed_at_us") if ok else None,
            key_id=key_id(signer),
            key_pinned=pinned is not None,
        )

    if key_id(signer) != key_id(embedded):
        return verdict(False, "the proof carries a different public key than the pinned one")
    if proof.get("record_id") not in (None, record_id):
        return verdict(False, "the record's id differs from the proof's record_id")
    if signed_size != tree_size or checkpoint.get("log_id", log_id) != log_id:
        return verdict(False, "the proof's tree size or log id differs from its checkpoint's")
    failure = verify_checkpoint_signature(checkpoint, log_id, signer)
    if failure is not None:
        return verdict(False, failure)
    try:
        leaf = leaf_hash(body)
        root = root_from_inclusion_path(leaf_index, tree_size, leaf, path)
    except ValueError as exc:
        return verdict(False, f"audit path does not fit: {exc}")
    if root.hex() != checkpoint["root"]:
        return verdict(False, "the record and audit path do not give the signed root")
    return verdict(
        True,
        f"record {record_id} is leaf {leaf_index} of the tree of size {tree_size} signed by"
        f" key {key_id(signer)}",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: verify a proof file (or a witness file); exit 0 when it verifies, 1 when
    not, 2 on bad usage."""
    parser = argparse.ArgumentParser(
        prog="python -m agentd.trace.verifier",
        description="Verify an agentd decision-log inclusion proof against its signed checkpoint,"
        " or a witness file of published checkpoints (--witness).",
    )
    parser.add_argument("proof", type=Path, nargs="?", help="proof JSON (agentctl audit prove ID)")
    parser.add_argument(
        "--record", type=Path, help="file holding the exact record body to check instead"
    )
    parser.add_argument(
        "--public-key", help="pinned signer: a PEM file, or the key as 64 hex digits"
    )
    parser.add_argument(
        "--witness",
        type=Path,
        help="check a witness file (JSON lines of published checkpoints): signatures and the"
        " consistency proofs between consecutive ones",
    )
    args = parser.parse_args(argv)
    if (args.proof is None) == (args.witness is None):
        parser.error("give a proof file or --witness FILE")
    try:
        pinned: Ed25519PublicKey | None = None
        if args.public_key:
            key_path = Path(args.public_key)
            key_data = key_path.read_bytes() if key_path.is_file() else args.public_key
            pinned = load_public_key(key_data)
        if args.witness is not None:
            lines = args.witness.read_text(encoding="utf-8").splitlines()
            entries = [json.loads(line) for line in lines if line.strip()]
            return _witness_main(entries, pinned)
        proof_text = args.proof.read_text(encoding="utf-8")
        record_text = args.record.read_bytes().rstrip(b"\r\n") if args.record else None
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verdict = verify_inclusion(proof_text, record_text, pinned)
    if not verdict.ok:
        print(f"FAILED: {verdict.reason}")
        return 1
    print(f"OK: {verdict.reason}")
    if not verdict.key_pinned:
        print("warning: the signer's key was taken from the proof itself; pin it with --public-key")
    return 0


def _witness_main(entries: list[Any], pinned: Ed25519PublicKey | None) -> int:
    if pinned is None:
        print("error: --witness needs --public-key: a witness shows nothing without a pinned key")
        return 2
    if not all(isinstance(e, dict) and isinstance(e.get("checkpoint"), dict) for e in entries):
        print("FAILED: a line of the witness file is not a witness entry")
        return 1
    bad = verify_witness(entries, {key_id(pinned): pinned})
    if bad is not None:
        print(f"FAILED at tree size {bad[0]}: {bad[1]}")
        return 1
    sizes = [int(e["checkpoint"]["tree_size"]) for e in entries]
    print(
        f"OK: {len(entries)} checkpoints up to tree size {max(sizes, default=0)} signed by key"
        f" {key_id(pinned)}, each consistent with the one before"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
