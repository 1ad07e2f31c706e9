"""Taint: which runs have received untrusted content, kept by the daemon, never by a replica.

A tool declared `trust = "untrusted"` (http.fetch, web search, mail, MCP servers) returns
content anyone on the outside may have written. Its result taints, in the daemon's own state:

- the **conversation** the call named, for the calling agent: `(agent, conversation)`;
- the **message** the call named (the inbox message of the run): `(agent, message)`;
- the **agent** itself, for a window (`[tools].taint_window_s`, default the agent's
  `run_timeout_s`): whatever conversation or message its later calls and messages name.

The router asks `of_sender(agent, conversation)` for every message and, when the sender is
tainted, stores the message with an `Agentd-Taint` header it sets itself (any such header the
sender sent is dropped) and taints the recipient the same way (`taint_delivered`): its
conversation, the message and, for the window, the recipient agent. The tool gateway asks
`of_call(agent, conversation, message)` for every call and passes the answer to policy as
`Request.tainted`.

Why the agent window: the ids in a tool call or a message body are the replica's word. A
replica that read untrusted content could name a fresh conversation, or another message's id,
to launder it; the agent (the subject: NATS permissions) is the one thing it cannot forge. So
anything an agent does within the window after it received untrusted content is tainted, in
every conversation. Beyond the window, the conversation and message marks still hold; code that
deliberately keeps content across runs longer than that is not followed (docs: README.md,
"Taint"; `taint_window_s` can be raised to cover it, at the price of tainting more).

State lives in memory, written through to the JetStream key-value bucket `<prefix>_taint`
(only the daemon's account can reach it), and is read back by a watcher, so a restarted
daemon and the other hosts of a cluster know it too. Lookups are dictionary reads: no round
trip on a call's path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import anyio
from anyio.abc import TaskStatus
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from agentd.bus import mirror_bucket

__all__ = ["Taint", "TaintBook"]

log = logging.getLogger("agentd.tools")

TAINT_HEADER = "Agentd-Taint"
"""The router's header on a stored inbox message: the id of the record that tainted it."""
MAX_ASKS = 100_000
ASK_TTL_S = 3600.0


@dataclass(frozen=True)
class Taint:
    """Where a taint comes from: the record that delivered the untrusted content (the untrusted
    tool's `tool.executed` record), that tool and the agent it was delivered to."""

    record_id: str
    tool: str
    agent: str
    at: float

    def fields(self) -> dict[str, Any]:
        """What decision records say about it (`tainted` + these)."""
        return {"taint_record": self.record_id, "taint_tool": self.tool, "taint_agent": self.agent}


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class TaintBook:
    """The daemon's record of tainted conversations, messages and agents."""

    def __init__(self, *, window_of: Callable[[str], float], ttl_s: float) -> None:
        self._window_of = window_of
        self._ttl_s = ttl_s
        self._marks: dict[str, tuple[float, Taint]] = {}
        """KV key -> (expires at, taint): `conv.<agent>.<h>`, `msg.<agent>.<h>`, `agent.<agent>`"""
        self._kv: KeyValue | None = None
        self._stopped = anyio.Event()
        self._asks: dict[str, tuple[float, str, str, str]] = {}
        """reply subject -> (expires at, asker, answerer, conversation): asks awaiting a reply"""

    # reading (every tool call, every message)
    def of_call(
        self, agent: str, conversation_id: str | None, message_id: str | None
    ) -> Taint | None:
        """The taint of a call `agent` makes naming this conversation and message, if any."""
        now = time.time()
        for key in (
            f"agent.{agent}",
            f"conv.{agent}.{_digest(conversation_id)}" if conversation_id else None,
            f"msg.{agent}.{_digest(message_id)}" if message_id else None,
        ):
            if key is None:
                continue
            found = self._marks.get(key)
            if found is not None and found[0] > now:
                return found[1]
        return None

    def of_sender(self, agent: str, conversation_id: str) -> Taint | None:
        """The taint of a message `agent` sends in this conversation, if any."""
        return self.of_call(agent, conversation_id, None)

    # writing (an untrusted result; a tainted message stored)
    async def taint_received(
        self, taint: Taint, conversation_id: str | None, message_id: str | None
    ) -> None:
        """`taint.agent` received untrusted content in a call naming these ids."""
        await self._mark(taint.agent, taint, conversation_id, message_id)

    async def taint_delivered(
        self, to: str, conversation_id: str, message_id: str, taint: Taint
    ) -> None:
        """A tainted message was stored for `to`: its run, conversation and `to` are tainted."""
        await self._mark(to, taint, conversation_id, message_id)

    async def _mark(
        self,
        agent: str,
        taint: Taint,
        conversation_id: str | None,
        message_id: str | None,
        *,
        window_s: float | None = None,
    ) -> None:
        now = time.time()
        keep = now + self._ttl_s
        writes: dict[str, tuple[float, Taint]] = {}
        if conversation_id:
            writes[f"conv.{agent}.{_digest(conversation_id)}"] = (keep, taint)
        if message_id:
            writes[f"msg.{agent}.{_digest(message_id)}"] = (keep, taint)
        window = self._window_of(agent) if window_s is None else window_s
        if window > 0:
            writes[f"agent.{agent}"] = (now + window, taint)
        for key, (until, value) in writes.items():
            self._keep(key, until, value, now)
        kv = self._kv
        if kv is None:
            return

        async def store(key: str) -> None:
            until, value = self._marks[key]
            body = json.dumps({"until": until, **asdict(value)}).encode()
            try:
                await kv.put(key, body)
            except Exception:  # memory holds it; a restart or another host may not
                log.exception("storing the taint %s failed", key)

        async with anyio.create_task_group() as tg:  # one round trip, not three
            for key in writes:
                tg.start_soon(store, key)

    # answers: a reply carries what the answering run read back to the asker
    def expect_reply(
        self, reply_to: str, *, asker: str, answerer: str, conversation_id: str
    ) -> None:
        """The router stored a message of `asker` whose run's answer goes to `reply_to`."""
        now = time.time()
        self._asks[reply_to] = (now + ASK_TTL_S, asker, answerer, conversation_id)
        while len(self._asks) > MAX_ASKS:  # the oldest ask is the least likely to be answered
            del self._asks[next(iter(self._asks))]

    async def taint_reply(self, reply_subject: str) -> Taint | None:
        """A reply on `reply_subject` is about to be relayed: when the run that answers is
        tainted, the asker is tainted (its conversation and window) before it can read it."""
        ask = self._asks.pop(reply_subject, None)
        if ask is None or ask[0] <= time.time():
            return None
        _, asker, answerer, conversation_id = ask
        taint = self.of_sender(answerer, conversation_id)
        if taint is not None:
            await self._mark(asker, taint, conversation_id, None)
        return taint

    async def taint_spawned(self, instance: str, taint: Taint) -> None:
        """An instance spawned by a tainted agent (its params may carry what that agent read):
        tainted for as long as taints are kept, whatever it names."""
        await self._mark(instance, taint, None, None, window_s=self._ttl_s)

    # the service: the bucket and the watcher that keeps memory in step with it
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
            description="tainted conversations, messages and agents (the daemon's only)",
            ttl=self._ttl_s,
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
            self._marks.pop(key, None)
            return
        try:
            body = json.loads(value)
            until = float(body.pop("until"))
            taint = Taint(**body)
        except Exception:  # only the daemon writes here; say so if it is not what it wrote
            log.error("ignoring a malformed taint entry %s", key)
            return
        self._keep(key, until, taint, time.time())

    def _keep(self, key: str, until: float, taint: Taint, now: float) -> None:
        """An agent's window runs to the latest end; a conversation or message keeps the taint
        that came first (its origin) while it holds."""
        held = self._marks.get(key)
        if key.startswith("agent."):
            if held is None or until > held[0]:
                self._marks[key] = (until, taint)
        elif held is None or held[0] <= now:
            self._marks[key] = (until, taint)
