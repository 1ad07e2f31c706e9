"""The Ed25519 key that signs the decision log's checkpoints.

The private key lives in the state directory as unencrypted PKCS#8 PEM, created on first use with
mode 0600 (refused later if group or others can read it, as ssh does). Its public half is written
beside it as `<name>.pub` (SubjectPublicKeyInfo PEM) for auditors; publish it somewhere an
attacker who can write the state directory cannot, because a verifier that trusts the key found
next to the log trusts whoever last replaced both.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._errors import DecisionLogError
from .verifier import key_id, load_public_key

__all__ = ["load_or_create_signing_key", "public_key_path", "read_public_key"]


def public_key_path(signing_key_path: Path) -> Path:
    """Where the public half of a signing key is exported."""
    return signing_key_path.with_name(signing_key_path.name + ".pub")


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the signing key, creating it (mode 0600) and its public file on first use."""
    path = Path(path)
    if not path.exists():
        _create(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise DecisionLogError(
            f"signing key {path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise DecisionLogError(f"signing key {path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise DecisionLogError(f"signing key {path} is not an Ed25519 key")
    _export_public(key.public_key(), public_key_path(path))
    return key


def read_public_key(path: Path) -> Ed25519PublicKey:
    """Read a public key file (PEM or hex)."""
    try:
        return load_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise DecisionLogError(f"cannot read public key {path}: {exc}") from exc


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: never overwrite a key that appeared meanwhile; 0600 from the first byte on.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def _export_public(public_key: Ed25519PublicKey, path: Path) -> None:
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if path.exists():
        try:
            if key_id(load_public_key(path.read_bytes())) == key_id(public_key):
                return
        except ValueError:
            pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(pem)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
