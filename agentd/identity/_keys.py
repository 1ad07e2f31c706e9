"""NATS user nkeys: Ed25519 key pairs in NATS's encoding (seeds `SU...`, public keys `U...`).

The nkeys package encodes seeds and signs; verifying needs only the public key, which nkeys
cannot load on its own, so it is decoded here and checked with `cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from typing import TYPE_CHECKING, Any

import nkeys  # type: ignore[import-untyped]

if TYPE_CHECKING:  # `cryptography` is imported by the first verify(): agentctl only signs
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["new_user_seed", "public_key_of", "sign", "valid_public_key", "verify"]

_USER_PREFIX = nkeys.PREFIX_BYTE_USER


def new_user_seed() -> str:
    """A fresh user nkey seed (`SU...`): the secret a credentials file holds."""
    seed: bytes = nkeys.encode_seed(os.urandom(32), _USER_PREFIX)
    return seed.decode()


@functools.lru_cache(maxsize=256)
def _key_pair(seed: str) -> Any:
    # deriving a key pair from a seed costs more than a signature: agentctl and the daemon sign
    # with the same few seeds again and again
    return nkeys.from_seed(bytearray(seed.encode()))


def public_key_of(seed: str) -> str:
    """The public key (`U...`) of a user seed; what the server and the daemon keep."""
    key: bytes = _key_pair(seed).public_key
    return key.decode()


def sign(seed: str, data: bytes) -> bytes:
    signature: bytes = _key_pair(seed).sign(data)
    return signature


def _raw_public(public_key: str) -> bytes | None:
    try:
        raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 35 or raw[0] != _USER_PREFIX:
        return None
    body, crc = raw[:-2], raw[-2:]
    if nkeys.crc16(bytearray(body)).to_bytes(2, "little") != crc:
        return None
    return body[1:]


def valid_public_key(public_key: str) -> bool:
    """Is this a well-formed user public key (prefix and checksum)?"""
    return _raw_public(public_key) is not None


@functools.lru_cache(maxsize=1024)
def _verifier(public_key: str) -> Ed25519PublicKey | None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = _raw_public(public_key)
    return None if raw is None else Ed25519PublicKey.from_public_bytes(raw)


def verify(public_key: str, data: bytes, signature: bytes) -> bool:
    """Did the holder of `public_key`'s seed sign `data`?"""
    from cryptography.exceptions import InvalidSignature

    verifier = _verifier(public_key)
    if verifier is None:
        return False
    try:
        verifier.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True
