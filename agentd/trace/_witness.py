"""Where the decision log's signed checkpoints are kept outside its file.

`AnchorStore` is the daemon's own anchor: a key (this host's node name) in a JetStream key-value
bucket with history, in the daemon's NATS. Witnesses (`[trace.witness]`) hold the same entries
elsewhere: `FileWitness` appends them, one JSON line each, to a file that should live on another
mount, and `StreamWitness` publishes them to a JetStream stream (replicated to other hosts in a
cluster). Each can say which entry it holds last (`latest`, read at startup: the anchor is the
newest of them all) and give every entry back (`entries`, for `agentctl audit verify`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import anyio
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from agentd.bus import Subjects

from ._anchor import WitnessEntry, parse_witness_lines

__all__ = ["AnchorStore", "FileWitness", "StreamWitness", "Witness", "read_witness_file"]

log = logging.getLogger("agentd.trace")

ANCHOR_HISTORY = 64  # JetStream's most per key


class Witness(Protocol):
    """A place that keeps published checkpoints."""

    name: str

    async def open(self) -> None: ...

    async def publish(self, entry: WitnessEntry) -> None: ...

    async def latest(self) -> WitnessEntry | None: ...

    async def entries(self) -> list[WitnessEntry]: ...


class AnchorStore:
    """The daemon's anchor: key `node` of the `<prefix>_log_anchor` bucket, with history."""

    def __init__(
        self, js: JetStreamContext, subjects: Subjects, node: str, *, replicas: int = 1
    ) -> None:
        self.name = f"anchor {subjects.log_anchor_bucket}/{node}"
        self._js, self._bucket, self._key, self._replicas = (
            js,
            subjects.log_anchor_bucket,
            node,
            replicas,
        )
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        try:
            self._kv = await self._js.key_value(self._bucket)
        except NotFoundError:
            self._kv = await self._js.create_key_value(
                KeyValueConfig(
                    bucket=self._bucket,
                    description="the decision log's last published checkpoint, per host",
                    history=ANCHOR_HISTORY,
                    storage=StorageType.FILE,
                    replicas=self._replicas,
                )
            )

    def _bucket_kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("AnchorStore.open() first")
        return self._kv

    async def publish(self, entry: WitnessEntry) -> None:
        await self._bucket_kv().put(self._key, entry.to_json().encode())

    async def latest(self) -> WitnessEntry | None:
        try:
            found = await self._bucket_kv().get(self._key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return None if found.value is None else _entry(found.value, self.name)

    async def entries(self) -> list[WitnessEntry]:
        try:
            history = await self._bucket_kv().history(self._key)
        except nats.js.errors.NoKeysError:
            return []
        return [_entry(e.value, self.name) for e in history if e.value]


class FileWitness:
    """Appends entries to a JSON-lines file (put it on another mount); fsyncs each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"witness file {path}"

    async def open(self) -> None:
        await anyio.to_thread.run_sync(self._touch)

    def _touch(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)

    async def publish(self, entry: WitnessEntry) -> None:
        await anyio.to_thread.run_sync(self._append, entry.to_json() + "\n")

    def _append(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    async def latest(self) -> WitnessEntry | None:
        entries = await self.entries()
        return max(entries, key=lambda e: e.checkpoint.tree_size, default=None)

    async def entries(self) -> list[WitnessEntry]:
        return await anyio.to_thread.run_sync(read_witness_file, self.path)


def read_witness_file(path: Path) -> list[WitnessEntry]:
    """Every entry of a witness file; ValueError names a bad line, OSError a missing file."""
    with open(path, encoding="utf-8") as f:
        return parse_witness_lines(f, str(path))


class StreamWitness:
    """Publishes entries to the `<PREFIX>_WITNESS` stream under `<prefix>.witness.<node>`."""

    def __init__(
        self, js: JetStreamContext, subjects: Subjects, node: str, *, replicas: int = 1
    ) -> None:
        self._js = js
        self._stream = subjects.witness_stream
        self._subject = subjects.witness(node)
        self._all = subjects.witness("*")
        self._replicas = replicas
        self.name = f"witness stream {self._stream} ({self._subject})"

    async def open(self) -> None:
        try:
            await self._js.stream_info(self._stream)
        except NotFoundError:
            await self._js.add_stream(
                StreamConfig(
                    name=self._stream,
                    subjects=[self._all],
                    storage=StorageType.FILE,
                    num_replicas=self._replicas,
                )
            )

    async def publish(self, entry: WitnessEntry) -> None:
        await self._js.publish(self._subject, entry.to_json().encode(), stream=self._stream)

    async def latest(self) -> WitnessEntry | None:
        try:
            msg = await self._js.get_last_msg(self._stream, self._subject)
        except NotFoundError:
            return None
        return None if not msg.data else _entry(msg.data, self.name)

    async def entries(self) -> list[WitnessEntry]:
        info = await self._js.stream_info(self._stream)
        if not info.state.messages:
            return []
        sub = await self._js.pull_subscribe(
            self._subject, stream=self._stream, config=_all_config()
        )
        found: list[WitnessEntry] = []
        try:
            while True:
                try:
                    batch = await sub.fetch(256, timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                found.extend(_entry(m.data, self.name) for m in batch if m.data)
                if batch[-1].metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return found


def _all_config() -> nats.js.api.ConsumerConfig:
    return nats.js.api.ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=nats.js.api.AckPolicy.NONE,
        inactive_threshold=30.0,
    )


def _entry(data: bytes, where: str) -> WitnessEntry:
    try:
        return WitnessEntry.from_json(data)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
