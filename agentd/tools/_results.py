"""Tool results by idempotency key, in a JetStream key-value bucket: no second side effect.

The key is the caller's agent, the message id of its run and the call id (`c1`, `c2`, ... in call
order, or the graph's own): stable across redeliveries of the message, while the run id is not.
A call first *claims* its key (compare-and-set create of a `running` entry with an expiry), runs,
then replaces the claim with the result (`done`). So:

- a redelivered run gets the stored result and the tool does not run again;
- two copies of one call racing through different gateways run it once: the loser waits for the
  winner's result;
- a call that failed releases its claim, so a rerun may try again (tools should fail without a
  partial side effect);
- a gateway that dies while the tool runs leaves a claim that expires after the tool's timeout;
  a later copy then runs the call again. Whether the first copy's effect happened is unknowable
  here: that one case is at-least-once (docs: agentd/tools/README.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import JsonValue

__all__ = ["CallRecord", "ResultStore", "ensure_results_bucket"]

CLAIM_POLL_S = 0.02
STREAM_CONFIG_DIFFERS = (
    10058  # JetStream: "stream name already in use with a different configuration"
)


async def ensure_results_bucket(
    js: JetStreamContext, bucket: str, ttl_s: float, *, replicas: int = 1
) -> KeyValue:
    """Create (or open) the results bucket; entries expire after `ttl_s` (a changed
    `[tools].results_ttl_s` updates the existing bucket, keeping its entries)."""
    config = KeyValueConfig(
        bucket=bucket,
        description="tool results by idempotency key",
        ttl=ttl_s,
        max_value_size=2 << 20,
        storage=StorageType.FILE,
        direct=True,
        replicas=replicas,
    )
    try:
        return await js.create_key_value(config)
    except BadRequestError as exc:
        if exc.err_code != STREAM_CONFIG_DIFFERS:
            raise
    stream = await js.stream_info(f"KV_{bucket}")
    await js.update_stream(replace(stream.config, max_age=ttl_s))
    return await js.key_value(bucket)


@dataclass(frozen=True)
class CallRecord:
    """One entry: a claim (`running`, until `until`) or a finished call (`done`, `result`)."""

    state: Literal["running", "done"]
    tool: str
    args_digest: str
    run_id: str | None
    until: float = 0.0
    result: JsonValue = None
    finished_at: float | None = None
    grant: str | None = None
    """A claim for a tool the replica runs itself: the grant its report must name."""
    revision: int = 0

    def to_json(self) -> bytes:
        body = {k: v for k, v in self.__dict__.items() if k != "revision"}
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, revision: int) -> CallRecord:
        body: dict[str, Any] = json.loads(data)
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, "revision": revision})


class ResultStore:
    """Claims and results of tool calls in one key-value bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @staticmethod
    def key(agent: str, message_id: str, call_id: str) -> str:
        # ids are free text and KV keys allow only [-/_=.a-zA-Z0-9]; the agent is part of the
        # key so that no agent can reach another's results by guessing ids
        digest = hashlib.sha256(f"{agent}\0{message_id}\0{call_id}".encode()).hexdigest()
        return f"call.{digest}"

    async def get(self, key: str) -> CallRecord | None:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return CallRecord.from_json(entry.value, entry.revision or 0)

    async def claim(
        self,
        key: str,
        *,
        tool: str,
        args_digest: str,
        run_id: str | None,
        hold_s: float,
        grant: str | None = None,
    ) -> tuple[int, None] | tuple[None, CallRecord]:
        """Claim `key` for one execution: `(revision, None)` when this copy runs the call, or
        `(None, record)` when the call already finished (its stored result stands)."""
        delay = CLAIM_POLL_S
        while True:
            until = time.time() + hold_s
            mine = CallRecord("running", tool, args_digest, run_id, until=until, grant=grant)
            with contextlib.suppress(KeyWrongLastSequenceError):
                return await self._kv.create(key, mine.to_json()), None
            found = await self.get(key)
            if found is None:  # deleted (a failed attempt released it) in between: try again
                continue
            if found.state == "done":
                return None, found
            if found.until <= time.time():  # its gateway died while running it: take over
                with contextlib.suppress(KeyWrongLastSequenceError):
                    return await self._kv.update(key, mine.to_json(), last=found.revision), None
                continue
            # another gateway runs it right now; its result is in another process: poll
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def complete(
        self,
        key: str,
        revision: int,
        *,
        tool: str,
        args_digest: str,
        run_id: str | None,
        result: JsonValue,
    ) -> tuple[CallRecord, bool]:
        """Replace our claim with the result: `(record, True)`. If our claim expired and another
        copy finished meanwhile, its record stands: `(its record, False)`."""
        done = CallRecord("done", tool, args_digest, run_id, result=result, finished_at=time.time())
        try:
            revision = await self._kv.update(key, done.to_json(), last=revision)
        except KeyWrongLastSequenceError:
            found = await self.get(key)
            if found is not None and found.state == "done":
                return found, False
            revision = await self._kv.put(key, done.to_json())
        return replace(done, revision=revision), True

    async def release(self, key: str, revision: int) -> None:
        """Give up our claim (the call failed), so that a later copy may run it."""
        with contextlib.suppress(KeyWrongLastSequenceError, KeyNotFoundError):
            await self._kv.delete(key, last=revision)
