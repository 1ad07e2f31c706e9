"""Signed control requests: who an operator is comes from their key, never from the payload.

NATS does not tell a subscriber who published a message, so agentctl signs each control request
with its operator's nkey seed and puts the signature in a header:

    Agentd-Auth: <public key> <unix time> <nonce> <base64 signature of
                 "<subject>\\n<time>\\n<nonce>\\n" + body>

The daemon looks the key up in the identity book (which holds only public keys), checks the
signature and the time, and takes the operator's name and role from the book. Only the daemon
may subscribe to `agentd.ctl.>`, so nobody else sees a signed request to replay it; the time
bound limits a replay from a copied log, and within that window the daemon refuses a nonce it
has seen on a state-changing verb (`NonceCache`; the older three-part header without a nonce is
still accepted for read-only verbs only).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from dataclasses import dataclass

from agentd.bus import Credentials
from agentd.errors import ControlError
from agentd.identity._book import IdentityBook
from agentd.identity._keys import public_key_of, sign, verify

__all__ = [
    "AUTH_HEADER",
    "MAX_SKEW_S",
    "NonceCache",
    "Speaker",
    "sign_request",
    "verify_request",
]

AUTH_HEADER = "Agentd-Auth"
MAX_SKEW_S = 300.0
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


@dataclass(frozen=True)
class Speaker:
    """The proven author of a request."""

    name: str
    role: str | None
    key: str = ""
    at: float = 0.0
    nonce: str | None = None  # None: an old client's request, which cannot change state


def _signed_bytes(subject: str, at: str, body: bytes, nonce: str | None = None) -> bytes:
    if nonce is None:
        return f"{subject}\n{at}\n".encode() + body
    return f"{subject}\n{at}\n{nonce}\n".encode() + body


def sign_request(creds: Credentials, subject: str, body: bytes) -> dict[str, str]:
    """Headers that prove `creds` sent `body` on `subject` once (empty without an nkey)."""
    if not creds.nkey_seed:
        return {}
    at = f"{time.time():.3f}"
    nonce = secrets.token_urlsafe(18)
    signature = base64.b64encode(sign(creds.nkey_seed, _signed_bytes(subject, at, body, nonce)))
    key = public_key_of(creds.nkey_seed)
    return {AUTH_HEADER: f"{key} {at} {nonce} {signature.decode()}"}


class NonceCache:
    """Nonces of signed requests seen within the time window, so an exact replay of a
    state-changing request is refused. Bounded: entries expire with the window, and when
    `max_entries` live ones are held new requests are refused (fail closed) until some do."""

    def __init__(self, window_s: float = MAX_SKEW_S, max_entries: int = 100_000) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._until: dict[tuple[str, str], float] = {}
        self._claims = 0

    def __len__(self) -> int:
        return len(self._until)

    def claim(self, speaker: Speaker, *, now: float | None = None) -> None:
        """Accept `speaker`'s nonce once; raise ControlError("replayed") if it was seen."""
        now = time.time() if now is None else now
        if speaker.nonce is None:
            raise ControlError(
                "unauthenticated",
                "this verb changes state and needs a request nonce: update agentctl "
                f"(its {AUTH_HEADER} header has no nonce)",
            )
        key = (speaker.key, speaker.nonce)
        self._claims += 1
        if self._claims % 1024 == 0:  # forget what has expired, now and then
            self._until = {k: t for k, t in self._until.items() if t >= now}
        if key in self._until and self._until[key] >= now:
            raise ControlError(
                "replayed", "this signed request was already accepted once (a replay): refused"
            )
        if len(self._until) >= self.max_entries:
            self._until = {k: t for k, t in self._until.items() if t >= now}
            if len(self._until) >= self.max_entries:
                raise ControlError(
                    "busy", "too many signed requests within the replay window; retry shortly"
                )
        # the signature stays valid until `at + window`: so must the memory of its nonce
        self._until[key] = speaker.at + self.window_s


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
    if len(parts) == 3:
        key, at, encoded = parts
        nonce: str | None = None
    elif len(parts) == 4 and _NONCE.match(parts[2]):
        key, at, nonce, encoded = parts
    else:
        raise ControlError("unauthenticated", f"malformed {AUTH_HEADER} header")
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
    if not verify(key, _signed_bytes(subject, at, body, nonce), signature):
        raise ControlError("unauthenticated", "the request's signature does not verify")
    return Speaker(ident.name, ident.role, key, when, nonce)
