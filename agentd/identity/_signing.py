"""Signed control requests: who an operator is comes from their key, never from the payload.

NATS does not tell a subscriber who published a message, so agentctl signs each control request
with its operator's nkey seed and puts the signature in a header:

    Agentd-Auth: <public key> <unix time> <base64 signature of "<subject>\\n<time>\\n" + body>

The daemon looks the key up in the identity book (which holds only public keys), checks the
signature and the time, and takes the operator's name and role from the book. Only the daemon
may subscribe to `agentd.ctl.>`, so nobody else sees a signed request to replay it; the time
bound limits a replay from a copied log.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass

from agentd.bus import Credentials
from agentd.errors import ControlError
from agentd.identity._book import IdentityBook
from agentd.identity._keys import public_key_of, sign, verify

__all__ = ["AUTH_HEADER", "MAX_SKEW_S", "Speaker", "sign_request", "verify_request"]

AUTH_HEADER = "Agentd-Auth"
MAX_SKEW_S = 300.0


@dataclass(frozen=True)
class Speaker:
    """The proven author of a request."""

    name: str
    role: str | None


def _signed_bytes(subject: str, at: str, body: bytes) -> bytes:
    return f"{subject}\n{at}\n".encode() + body


def sign_request(creds: Credentials, subject: str, body: bytes) -> dict[str, str]:
    """Headers that prove `creds` sent `body` on `subject` (empty without an nkey)."""
    if not creds.nkey_seed:
        return {}
    at = f"{time.time():.3f}"
    signature = base64.b64encode(sign(creds.nkey_seed, _signed_bytes(subject, at, body)))
    return {AUTH_HEADER: f"{public_key_of(creds.nkey_seed)} {at} {signature.decode()}"}


def verify_request(
    book: IdentityBook,
    subject: str,
    body: bytes,
    headers: dict[str, str] | None,
    *,
    now: float | None = None,
) -> Speaker:
    """The operator who signed this request, or ControlError("unauthenticated") saying why not."""
    value = (headers or {}).get(AUTH_HEADER)
    if not value:
        raise ControlError(
            "unauthenticated",
            "control requests must be signed with an operator's credentials "
            "(agentctl --creds FILE, or AGENTD_CREDS)",
        )
    parts = value.split(" ")
    if len(parts) != 3:
        raise ControlError("unauthenticated", f"malformed {AUTH_HEADER} header")
    key, at, encoded = parts
    try:
        when = float(at)
        signature = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error):
        raise ControlError("unauthenticated", f"malformed {AUTH_HEADER} header") from None
    if abs((time.time() if now is None else now) - when) > MAX_SKEW_S:
        raise ControlError("unauthenticated", "the request's signature is too old (or clock skew)")
    ident = book.by_key(key)
    if ident is None or ident.kind != "operator":
        raise ControlError("unauthenticated", "the signing key is not a known operator's")
    if not verify(key, _signed_bytes(subject, at, body), signature):
        raise ControlError("unauthenticated", "the request's signature does not verify")
    return Speaker(ident.name, ident.role)
