"""The run ledger: what every replica of an agent must agree on, kept in a JetStream
key-value bucket.

- Finished runs by agent and message id (`run.<agent>.<id>`): a redelivered message whose run
  already finished is acked with the stored result instead of running twice to completion (the
  first `create` wins).
- Conversation leases: one replica at a time runs a conversation. A lease names its holder and
  an expiry; the holder renews it while it works and frees it (expiry 0) when the conversation's
  queue is empty; a replica that died leaves a lease that expires, and a restarted replica of the
  same name takes its own leases back at once. Every change is a compare-and-set on the key's
  revision, so two replicas never both win.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from agentd.bus import RunResult

__all__ = ["RunLedger", "run_ledger"]


def run_ledger(js: JetStreamContext, bucket: str) -> KeyValue:
    """The bucket as a replica sees it: by name, without asking for the stream's info (a
    replica's account cannot: that info would list every agent's keys). The daemon creates it
    with direct gets allowed (agentd.bus.ensure_streams)."""
    return KeyValue(name=bucket, stream=f"KV_{bucket}", pre=f"$KV.{bucket}.", js=js, direct=True)


def _lease_key(agent: str, conversation: str) -> str:
    # conversation ids are free text; KV keys allow only [-/_=.a-zA-Z0-9]
    return f"lease.{agent}.{hashlib.sha1(conversation.encode()).hexdigest()}"


class RunLedger:
    def __init__(self, kv: KeyValue, *, agent: str, replica: str, lease_s: float) -> None:
        self._kv = kv
        self._agent = agent
        self._replica = replica
        self._lease_s = lease_s
        self._revisions: dict[str, int] = {}  # conversation -> revision of the lease we hold
        self._free: dict[str, int] = {}  # conversation -> revision of the lease we last freed

    # finished runs
    def _run_key(self, message_id: str) -> str:
        # under the agent's name, so NATS permissions keep each agent to its own entries
        return f"run.{self._agent}.{message_id}"

    async def finished(self, message_id: str) -> RunResult | None:
        try:
            entry = await self._kv.get(self._run_key(message_id))
        except KeyNotFoundError:
            return None
        return RunResult.model_validate_json(entry.value or b"{}")

    async def record_finished(self, message_id: str, result: RunResult) -> tuple[RunResult, bool]:
        """Record `result` as the message's one completion. Returns the message's result and
        whether it was ours (False: another delivery finished first; its result stands)."""
        try:
            await self._kv.create(self._run_key(message_id), result.to_json())
        except KeyWrongLastSequenceError:
            earlier = await self.finished(message_id)
            return (earlier or result), False
        return result, True

    # conversation leases
    async def acquire(self, conversation: str) -> bool:
        key = _lease_key(self._agent, conversation)
        value = self._lease_value()
        free = self._free.pop(conversation, None)
        if free is not None:  # we released it last: one compare-and-set takes it back
            try:
                self._revisions[conversation] = await self._kv.update(key, value, last=free)
                return True
            except KeyWrongLastSequenceError:
                pass  # someone else has had it since
        try:
            self._revisions[conversation] = await self._kv.create(key, value)
            return True
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:  # deleted between our create and get: try again later
            return False
        holder = json.loads(entry.value) if entry.value else {}
        mine = holder.get("replica") == self._replica
        if not mine and holder.get("until", 0) > time.time():
            return False
        try:  # free, expired, or ours from before a restart: take it over
            self._revisions[conversation] = await self._kv.update(key, value, last=entry.revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def renew(self, conversation: str) -> None:
        revision = self._revisions.get(conversation)
        if revision is None:
            return
        key = _lease_key(self._agent, conversation)
        try:
            self._revisions[conversation] = await self._kv.update(
                key, self._lease_value(), last=revision
            )
        except KeyWrongLastSequenceError:
            self._revisions.pop(conversation, None)

    async def release(self, conversation: str) -> None:
        """Mark the lease free (an expired holder), remembering its revision so that the next
        run of this conversation here takes it back in one round trip."""
        revision = self._revisions.pop(conversation, None)
        if revision is None:
            return
        key = _lease_key(self._agent, conversation)
        free = json.dumps({"replica": None, "until": 0}).encode()
        with contextlib.suppress(KeyWrongLastSequenceError):
            self._free[conversation] = await self._kv.update(key, free, last=revision)
        if len(self._free) > 10_000:  # bounded memory: forget the oldest
            self._free.pop(next(iter(self._free)))

    @property
    def held(self) -> list[str]:
        return list(self._revisions)

    def _lease_value(self) -> bytes:
        return json.dumps({"replica": self._replica, "until": time.time() + self._lease_s}).encode()
