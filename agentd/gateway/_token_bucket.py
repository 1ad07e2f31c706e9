"""Where outside tokens are kept: the JetStream key-value bucket `<prefix>_tokens`.

One key per token name, the entry's JSON (the digest, never the secret). Only the daemon's
account can reach the bucket (agents import nothing of it). Issue and revoke write it with a
compare-and-set on the key's revision, so two hosts of a cluster cannot both issue one name; a
watcher keeps every host's `TokenBook` in step with it, so a token issued through any host works
at every host's gateway, a revocation is refused everywhere within the watcher's delivery
(milliseconds), and a restarted daemon knows every token it issued before. A revoked token's
entry stays (`agentctl tokens list` shows it) until its name is issued anew.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import anyio
from anyio.abc import TaskStatus
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from agentd.bus import mirror_bucket
from agentd.errors import ControlError
from agentd.gateway._outside_tokens import OutsideToken
from agentd.gateway._tokens import TokenBook

__all__ = ["TokenBucket"]

log = logging.getLogger("agentd.gateway")


class TokenBucket:
    """The outside tokens of `book`, written through to the bucket and read back from it."""

    def __init__(self, book: TokenBook) -> None:
        self.book = book
        self._kv: KeyValue | None = None
        self._stopped = anyio.Event()

    async def issue(
        self, name: str, pools: tuple[str, ...], ttl_s: float, issued_by: str
    ) -> tuple[str, OutsideToken]:
        """Issue token `name`: the secret (shown once) and its stored entry."""
        secret, entry = self.book.new_outside(name, pools, ttl_s, issued_by)
        kv = self._bucket()
        current = await _get(kv, name)
        try:
            if current is None:
                await kv.create(name, entry.encode())
            else:
                stored, revision = current
                if stored.state() == "active":  # issued through another host just now
                    raise ControlError("name_taken", f"a token named {name!r} is active")
                await kv.update(name, entry.encode(), last=revision)
        except KeyWrongLastSequenceError:
            raise ControlError(
                "name_taken", f"a token named {name!r} was issued at the same moment elsewhere"
            ) from None
        self.book.keep(entry)
        return secret, entry

    async def revoke(self, name: str, revoked_by: str) -> OutsideToken:
        """Revoke token `name`: refused at once here, and at the other hosts as the bucket's
        watchers deliver it."""
        kv = self._bucket()
        current = await _get(kv, name)
        if current is None:
            known = ", ".join(e.name for e in self.book.outside_tokens()) or "none"
            raise ControlError("unknown_token", f"no token named {name!r} (tokens: {known})")
        stored, revision = current
        if stored.revoked_at is not None:
            raise ControlError(
                "already_revoked", f"token {name!r} was revoked by {stored.revoked_by}"
            )
        revoked = dataclasses.replace(stored, revoked_at=time.time(), revoked_by=revoked_by)
        self.book.keep(revoked)  # first here: no call is let through while the write travels
        try:
            await kv.update(name, revoked.encode(), last=revision)
        except KeyWrongLastSequenceError:
            self.book.keep(stored)
            raise ControlError(
                "conflict", f"token {name!r} changed while it was revoked: try again"
            ) from None
        return revoked

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise ControlError("unavailable", "the token bucket is not open yet: try again")
        return self._kv

    # the service: the bucket and the watcher that keeps the book in step with it
    async def run(
        self,
        js: JetStreamContext,
        bucket: str,
        *,
        replicas: int = 1,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        config = KeyValueConfig(
            bucket=bucket,
            description="outside LLM-gateway tokens by name, as digests (the daemon's only)",
            storage=StorageType.FILE,
            replicas=replicas,
        )
        await mirror_bucket(
            js, config, self._apply, self._opened, self._stopped, task_status=task_status
        )

    def _opened(self, kv: KeyValue) -> None:
        self._kv = kv

    async def shutdown(self) -> None:
        self._stopped.set()

    def _apply(self, key: str, value: bytes | None, operation: str | None) -> None:
        if operation in ("DEL", "PURGE") or not value:
            self.book.forget(key)
            return
        try:
            entry = OutsideToken.decode(value)
        except Exception:  # only the daemon writes here; say so if it is not what it wrote
            log.error("ignoring a malformed token entry %s", key)
            return
        held = self.book.outside_tokens()
        mine = next((e for e in held if e.name == entry.name), None)
        if (
            mine is not None
            and mine.digest == entry.digest
            and mine.revoked_at is not None
            and entry.revoked_at is None
        ):  # the issue's write arriving after this host revoked it: revoked stays revoked
            return
        self.book.keep(entry)


async def _get(kv: KeyValue, name: str) -> tuple[OutsideToken, int] | None:
    try:
        found = await kv.get(name)
    except KeyNotFoundError:  # never written, or deleted
        return None
    if not found.value or found.revision is None:
        return None
    return OutsideToken.decode(found.value), found.revision
