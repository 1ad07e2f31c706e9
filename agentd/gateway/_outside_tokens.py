"""Outside tokens: LLM-gateway bearer tokens an operator issues to a client outside agentd.

`agentctl tokens issue NAME --pool POOL --ttl 30d` gives any OpenAI client (any language:
`OPENAI_BASE_URL`, `OPENAI_API_KEY`) a token scoped to some pools and expiring. Its policy
subject is `ext:<NAME>` (`agentd.config.external_subject`), as a registered external agent's:
policy decides on top of the scope, and a token cannot pass as a replica. The secret is shown
once; only its SHA-256 digest is kept (a token is 256 random bits, so a plain digest cannot be
reversed by guessing), in the daemon's key-value bucket (`_token_bucket.py`).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from agentd.errors import ControlError

__all__ = [
    "MAX_TTL_S",
    "OUTSIDE_TOKEN_PREFIX",
    "TOKEN_NAME",
    "OutsideToken",
    "new_outside_secret",
    "parse_ttl",
    "token_digest",
]

OUTSIDE_TOKEN_PREFIX = "agentd-ext-"
TOKEN_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MAX_TTL_S = 366 * 86400.0
"""The longest a token may live: a year (and a day). A longer grant is a new token."""
_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


@dataclass(frozen=True)
class OutsideToken:
    """One issued token as stored: never the secret, only its digest."""

    name: str
    digest: str
    pools: tuple[str, ...]
    issued_at: float
    expires_at: float
    issued_by: str
    revoked_at: float | None = None
    revoked_by: str | None = None

    def state(self, now: float | None = None) -> str:
        """`active`, `expired` or `revoked`."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if (now or time.time()) >= self.expires_at else "active"

    def row(self) -> dict[str, Any]:
        """What `agentctl tokens list` shows: everything but the digest."""
        body = asdict(self)
        del body["digest"]
        body["pools"] = list(self.pools)
        body["state"] = self.state()
        return body

    def encode(self) -> bytes:
        body = asdict(self)
        body["pools"] = list(self.pools)
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> OutsideToken:
        body = json.loads(data)
        body["pools"] = tuple(body["pools"])
        return cls(**body)


def new_outside_secret() -> str:
    return OUTSIDE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_ttl(text: str) -> float:
    """`30d`, `12h`, `90m`, `3600s`, `2w` -> seconds; a ControlError says what is accepted."""
    match = _TTL.match(text) if isinstance(text, str) else None
    if match is None:
        raise ControlError(
            "bad_request",
            f"ttl {text!r} is not a duration: write a number and a unit, s, m, h, d or w "
            "(e.g. 30d, 12h, 90m)",
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ControlError("bad_request", f"ttl {text!r} must be longer than zero")
    if seconds > MAX_TTL_S:
        raise ControlError(
            "bad_request", f"ttl {text!r} is longer than a token may live (366d): issue anew"
        )
    return seconds
