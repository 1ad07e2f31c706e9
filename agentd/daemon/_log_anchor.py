"""The daemon's side of anchoring the decision log outside its file (docs/audit.md, "Anchoring").

On start, before anything is ingested: the newest checkpoint published anywhere (the anchor key in
the daemon's JetStream, the configured witnesses) is the one the log must extend; the log, opened
with signing held, checks its records against it (`DecisionLog.anchor`) and refuses to extend or
sign a file that does not give its root: the daemon stops with an error naming that checkpoint and
the first record that can be the changed one. Then, for as long as it runs, it publishes each new
checkpoint (the log writer signs one every `[trace].checkpoint_every` records and at least every
`[trace].checkpoint_interval_s` while records arrive), with its RFC 6962 consistency proof from the
one published before (rebuilt from the file: a file rewritten since stops the daemon too), to the
anchor and to every witness. A witness that fails is logged and tried again with the next
checkpoint; the anchor must take each one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import nats.errors
from anyio.abc import TaskStatus
from nats.js import JetStreamContext

from agentd.bus import Subjects
from agentd.config import Config
from agentd.trace import (
    AnchorStore,
    Checkpoint,
    FileWitness,
    LogWriter,
    StreamWitness,
    Witness,
    WitnessEntry,
)

__all__ = ["LogAnchor", "build_log_anchor"]

log = logging.getLogger("agentd.trace")

POLL_S = 1.0


class LogAnchor:
    """Anchors the log behind `writer` in `anchor` and publishes to `witnesses` (a service)."""

    def __init__(
        self,
        writer: LogWriter,
        anchor: AnchorStore,
        witnesses: list[Witness],
    ) -> None:
        self._writer = writer
        self._log = writer.log
        self._anchor = anchor
        self._witnesses = witnesses
        self._published: Checkpoint | None = None
        self.published = 0

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._anchor.open()
        for witness in self._witnesses:
            await witness.open()
        newest = await self._newest()
        anchored = None if newest is None else newest.checkpoint
        if anchored is None:
            log.warning(
                "no checkpoint of the decision log %s was published before: anchoring it as it"
                " is now (%d records)",
                self._log.path,
                self._log.tree_size,
            )
        # DecisionLogDamaged here stops the daemon: it must not sign over a rewritten log
        await self._writer.call(self._log.anchor, anchored)
        self._writer.release()
        if anchored is not None:
            log.info(
                "decision log extends the checkpoint published at tree size %d",
                anchored.tree_size,
            )
        self._published = anchored
        await self._publish_new()
        task_status.started()
        while True:
            with anyio.move_on_after(POLL_S):  # also retries a publish that failed
                await self._writer.next_commit()
            await self._publish_new()

    async def _newest(self) -> WitnessEntry | None:
        found = [await self._anchor.latest()]
        for witness in self._witnesses:
            try:
                found.append(await witness.latest())
            except (OSError, ValueError, nats.errors.Error) as exc:
                log.warning("cannot read %s: %s", witness.name, exc)
        entries = [e for e in found if e is not None]
        return max(entries, key=lambda e: e.checkpoint.tree_size, default=None)

    async def _publish_new(self) -> None:
        current = self._log.last_checkpoint
        previous = self._published
        if current is None or (previous is not None and current.tree_size <= previous.tree_size):
            return
        # rebuilt from the file: DecisionLogDamaged if it no longer gives both roots
        entry = await self._writer.call(self._log.witness_entry, previous, current)
        try:
            await self._anchor.publish(entry)
        except nats.errors.Error as exc:  # the bus is down or closing: the next tick retries
            log.warning(
                "anchoring the checkpoint at tree size %d failed (tried again): %r",
                current.tree_size,
                exc,
            )
            return
        self._published = current
        self.published += 1
        for witness in self._witnesses:
            try:
                await witness.publish(entry)
            except (OSError, nats.errors.Error) as exc:
                log.warning(
                    "publishing the checkpoint at tree size %d to %s failed: %s",
                    current.tree_size,
                    witness.name,
                    exc,
                )

    async def witnessed(self) -> list[WitnessEntry]:
        """Every checkpoint published outside the log that can be read now (for verify)."""
        entries = await self._anchor.entries()
        for witness in self._witnesses:
            try:
                entries.extend(await witness.entries())
            except (OSError, ValueError, nats.errors.Error) as exc:
                log.warning("cannot read %s: %s", witness.name, exc)
        return entries


def build_log_anchor(
    config: Config, js: JetStreamContext, subjects: Subjects, writer: LogWriter, state_dir: Path
) -> LogAnchor:
    """The anchor and witnesses `[trace]` asks for, on this host's key."""
    node, replicas = config.cluster.node, config.stream_replicas
    witnesses: list[Witness] = []
    cfg = config.trace.witness
    if cfg.file is not None:
        witnesses.append(FileWitness(state_dir / cfg.file))  # an absolute path stays as it is
    if cfg.stream:
        witnesses.append(StreamWitness(js, subjects, node, replicas=replicas))
    return LogAnchor(
        writer,
        AnchorStore(js, subjects, node, replicas=replicas),
        witnesses,
    )
