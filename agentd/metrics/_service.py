"""The metrics service: the HTTP endpoint and the fleet sampler.

- The endpoint is prometheus-client's own HTTP server in its thread: a scrape reads counters
  and the latest fleet snapshot and never touches the event loop. A port already in use is
  logged and the daemon runs on without the endpoint (metrics must not take agents down).
- The sampler calls `sample()` (the daemon's `ps`) every `sample_interval_s`.

Runs are counted from their `run.*` records like every other record (the daemon's observer of
the log writer calls `AgentdMetrics.observe`), so failed and cancelled attempts count too; the
run ledger, which keeps only successes, no longer feeds metrics.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

import anyio
from anyio.abc import TaskStatus
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
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._sample = sample
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
