"""A key-value bucket mirrored in memory: open (or create) it, apply every entry it holds, then
follow its updates until stopped.

Services whose state lives in a JetStream key-value bucket but is read on every call (outside
tokens, taint marks) keep a copy in memory and let the bucket's watcher keep that copy in step:
a write through any host reaches every host's copy within the watcher's delivery."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus
from nats.js.api import KeyValueConfig
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

__all__ = ["ApplyEntry", "mirror_bucket"]

ApplyEntry = Callable[[str, "bytes | None", "str | None"], None]
"""Called with (key, value, operation) for every entry and update; operation is "DEL" or
"PURGE" for a removed key."""


async def mirror_bucket(
    js: JetStreamContext,
    config: KeyValueConfig,
    apply: ApplyEntry,
    opened: Callable[[KeyValue], None],
    stopped: anyio.Event,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Open `config`'s bucket (as it is, if it exists with other settings), `apply` what it holds,
    call `opened(kv)`, signal `task_status`, then `apply` every update until `stopped` is set."""
    try:
        kv = await js.create_key_value(config)
    except Exception:  # exists already (perhaps with other settings): use it as it is
        kv = await js.key_value(config.bucket)
    watcher = await kv.watchall()
    try:
        while True:  # the current entries, then None
            entry = await watcher.updates(timeout=30.0)  # type: ignore[no-untyped-call]
            if entry is None:
                break
            apply(entry.key, entry.value, entry.operation)
        opened(kv)
        task_status.started()
        async with anyio.create_task_group() as tg:

            async def follow() -> None:
                async for update in watcher:
                    if update is not None:
                        apply(update.key, update.value, update.operation)

            tg.start_soon(follow)
            await stopped.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
