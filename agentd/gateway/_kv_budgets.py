"""The token buckets' store: a JetStream key-value bucket (`<prefix>_budgets`, the daemon's only).

One key per (agent, pool), `tokens.<agent>.<pool>`, holding `{"tokens", "stamp", "rate",
"burst"}` (stamp: wall-clock seconds). Writes are compare-and-set on the key's revision
(`create` for a new key, `update(last=revision)` after), so two hosts that spend from the same
bucket at once cannot both take the last tokens: the second write fails, and its writer reads
the first one's state and decides again. File storage, replicated like the daemon's streams:
the spent budget survives a daemon restart. Agents' NATS accounts import nothing of it
(agentd/identity/_accounts.py), so no replica can read, reset or delete its own bucket.
"""

from __future__ import annotations

import json
import logging

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import (
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue

from agentd.gateway._budgets import BucketState, BudgetUnavailable

__all__ = ["KvBucketStore", "open_budget_store"]

log = logging.getLogger("agentd.gateway")


async def open_budget_store(
    js: JetStreamContext, bucket: str, *, replicas: int = 1
) -> KvBucketStore:
    """Create (or open) the budgets bucket."""
    config = KeyValueConfig(
        bucket=bucket,
        description="LLM token budgets: limits.toml model limits' buckets (the daemon's only)",
        history=1,
        storage=StorageType.FILE,
        replicas=replicas,
    )
    try:
        kv = await js.create_key_value(config)
    except Exception:  # exists (perhaps made with other settings): use it as it is
        kv = await js.key_value(bucket)
    return KvBucketStore(kv)


class KvBucketStore:
    """`BucketStore` on a KV bucket; every failure is `BudgetUnavailable` (the call is refused,
    never let through unmetered)."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    async def load(self, key: str) -> tuple[BucketState | None, int | None]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError as exc:  # never written, or deleted/purged (a marker)
            marker = getattr(exc, "entry", None)
            return None, (marker.revision if marker is not None else None)
        except Exception as exc:
            raise BudgetUnavailable(f"cannot read {key}: {exc!r}") from exc
        try:
            return BucketState.from_json(json.loads(entry.value or b"")), entry.revision
        except ValueError as exc:  # only the daemon writes here; replace what it cannot read
            log.error("token budget %s holds %r (%s): starting it over", key, entry.value, exc)
            return None, entry.revision

    async def swap(self, key: str, state: BucketState, revision: int | None) -> int | None:
        body = json.dumps(state.to_json()).encode()
        try:
            if revision is None:
                return int(await self.kv.create(key, body))
            return int(await self.kv.update(key, body, last=revision))
        except KeyWrongLastSequenceError:
            return None
        except Exception as exc:
            raise BudgetUnavailable(f"cannot write {key}: {exc!r}") from exc
