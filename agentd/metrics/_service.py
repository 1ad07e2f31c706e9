"""The metrics service: the HTTP endpoint, the fleet sampler and the run-ledger feed.

- The endpoint is prometheus-client's own HTTP server in its thread: a scrape reads counters
  and the latest fleet snapshot and never touches the event loop. A port already in use is
  logged and the daemon runs on without the endpoint (metrics must not take agents down).
- The sampler calls `sample()` (the daemon's `ps`) every `sample_interval_s`.
- Finished runs are read from the run ledger's key-value stream (`$KV.<bucket>.run.>`) through
  an ordered consumer that starts at new messages: the ledger keeps one completion per message
  (the first `create` wins), so each run counts once however often it was redelivered.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

import anyio
from anyio.abc import TaskStatus
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from prometheus_client import start_http_server

from agentd.config import MetricsConfig

from ._registry import AgentdMetrics

__all__ = ["MetricsService"]

log = logging.getLogger("agentd.metrics")

Sample = Callable[[], Awaitable[Sequence[Mapping[str, Any]]]]


class MetricsService:
    """Serves `metrics` on [metrics].host:port; `port` is the bound port once running."""

    def __init__(
        self,
        config: MetricsConfig,
        metrics: AgentdMetrics,
        *,
        sample: Sample | None = None,
        js: JetStreamContext | None = None,
        runs_bucket: str | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._sample = sample
        self._js = js
        self._runs_bucket = runs_bucket
        self._server: WSGIServer | None = None
        self._stopped = anyio.Event()
        self.port: int | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        server: WSGIServer | None = None
        thread: threading.Thread | None = None
        try:
            server, thread = start_http_server(cfg.port, cfg.host, registry=self.metrics.registry)
        except OSError as exc:
            log.error(
                "metrics endpoint not started on %s:%d: %s; set [metrics].port to a free port"
                " or [metrics].enabled = false",
                cfg.host,
                cfg.port,
                exc,
            )
        else:
            self._server = server
            self.port = int(server.server_port)
            log.info("metrics on http://%s:%d/metrics", cfg.host, self.port)
        try:
            async with anyio.create_task_group() as tg:
                if self._sample is not None:
                    tg.start_soon(self._sample_fleet)
                if self._js is not None and self._runs_bucket is not None:
                    await tg.start(self._follow_ledger, self._js, self._runs_bucket)
                task_status.started()
                await self._stopped.wait()
                tg.cancel_scope.cancel()
        finally:
            if server is not None and thread is not None:
                # shutdown() blocks until the serving thread notices: keep it off the loop
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(server.shutdown)
                server.server_close()
                thread.join(5)

    async def shutdown(self) -> None:
        """Stop serving (repeatable, and harmless before `run`)."""
        self._stopped.set()

    async def _sample_fleet(self) -> None:
        assert self._sample is not None
        while True:
            try:
                self.metrics.observe_fleet(await self._sample())
            except Exception as exc:  # a sample that fails (bus down) is skipped, not fatal
                log.debug("fleet sample failed: %s", exc)
            await anyio.sleep(self.config.sample_interval_s)

    async def _follow_ledger(
        self,
        js: JetStreamContext,
        bucket: str,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        async def on_entry(msg: Any) -> None:
            try:
                result = json.loads(msg.data)
                agent = str(result["agent"])
                duration = result.get("duration_s")
                self.metrics.observe_run(
                    agent,
                    ok=bool(result.get("ok")),
                    duration_s=float(duration) if isinstance(duration, int | float) else None,
                )
            except (ValueError, KeyError, TypeError):
                log.debug("unreadable run-ledger entry on %s", msg.subject)

        sub = await js.subscribe(
            f"$KV.{bucket}.run.>",
            cb=on_entry,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            stream=f"KV_{bucket}",
        )
        task_status.started()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await sub.unsubscribe()
