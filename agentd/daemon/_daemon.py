"""`agentd run`: the daemon's lifecycle.

capture signals -> start services in dependency order, each ready before the next (their wiring:
agentd.daemon._services) -> serve -> drain within the grace period -> force. Signal handlers only
set flags (uvicorn's model); a second SIGINT forces at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup

from agentd.bus import Subjects, embedded_url
from agentd.config import LoadedConfig, load_config
from agentd.daemon._authority import Authority
from agentd.daemon._child_events import report_child_event
from agentd.daemon._logging import setup_logging
from agentd.daemon._recorder import Recorder
from agentd.daemon._sandbox import host_abi, sandbox_startup_check
from agentd.daemon._services import Services
from agentd.daemon._statedir import StateDirLock
from agentd.daemon._systemd import SystemdNotifier
from agentd.errors import ConfigError
from agentd.inference import ModelPools, missing_files
from agentd.metrics import AgentdMetrics
from agentd.sandbox import set_undumpable
from agentd.supervisor import ChildEvent, Supervisor
from agentd.telemetry import TelemetrySettings, setup_telemetry
from agentd.trace import (
    DecisionLogDamaged,
    DecisionRecord,
    LogWriter,
    WireRecord,
    open_decision_log,
)

__all__ = ["Daemon"]

log = logging.getLogger("agentd.daemon")

DAEMON_UMASK = 0o077


class Daemon:
    """The agentd process: one root task group holding every service."""

    def __init__(self, loaded: LoadedConfig, *, notifier: SystemdNotifier | None = None) -> None:
        self._loaded = loaded
        self.config = loaded.config
        self.subjects = Subjects(self.config.bus.prefix)
        self.notifier = notifier or SystemdNotifier()
        self.state_dir = self.config.daemon.state_dir
        self.started_at = time.time()
        self.exit_code = 0
        self._stop = anyio.Event()
        self._forced = False
        self._supervisor = Supervisor(
            on_event=self._on_child_event, registry_path=self.state_dir / "children.json"
        )
        # a broken policy stops the start here, before anything runs (PolicyError: file:line)
        self.authority = Authority(self.config.policy)
        self._recorder: Recorder | None = None
        self.services: Services | None = None  # once `run()` has the decision log open
        self.metrics = AgentdMetrics()
        # The model pools ([models.*]); the LLM gateway reads endpoints from it.
        self.pools = ModelPools(
            self.config.models, state_dir=self.state_dir, record=self._record_decision
        )
        # like the policy: a pool that cannot start or be placed stops the start before anything
        # runs
        if missing := missing_files(self.config.models):
            raise ConfigError(loaded.source, missing)
        self.pools.check_placement()
        # [checkpoints] backend postgres reads its connection string from the environment: a
        # missing one stops the start here, not in every replica later
        if missing := self.config.checkpoints.environment_problems(os.environ):
            raise ConfigError(loaded.source, missing)
        # the kernel sandbox of replicas: what this host cannot protect is said here, and
        # [sandbox].require refuses to start without all of it
        sandbox_startup_check(self.config, str(loaded.source), host_abi())
        self.nats_url = self.config.bus.url or embedded_url(self.config.bus.embedded)
        if self.config.bus.url is None and self.config.bus.tls.enabled:
            self.nats_url = self.nats_url.replace("nats://", "tls://", 1)

    # lifecycle
    async def run(self) -> int:
        with StateDirLock(self.state_dir):
            decision_log = open_decision_log(self.config.trace, self.state_dir)
            # one writer for the log: the daemon's own records and those ingested from workers
            writer = LogWriter(
                decision_log, checkpoint_interval_s=self.config.trace.checkpoint_interval_s
            )
            self._recorder = Recorder(writer)
            # every record the log stores, the daemon's and the replicas' alike
            writer.add_observer(self._observe_records)
            self.services = services = Services(
                self.config,
                supervisor=self._supervisor,
                authority=self.authority,
                pools=self.pools,
                recorder=self._recorder,
                metrics=self.metrics,
                notifier=self.notifier,
                nats_url=self.nats_url,
                status=self._status,
            )
            telemetry = setup_telemetry(
                TelemetrySettings.from_config(self.config.trace),
                service_name="agentd",
                attributes={"service.instance.id": f"{socket.gethostname()}-{os.getpid()}"},
            )
            try:
                with _unwrap_damaged():
                    await self._serve(writer, services)
            finally:
                await self._recorder.close()
                # export what is buffered; off the loop, an unreachable collector takes time
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(telemetry.shutdown)
        return self.exit_code

    async def _serve(self, writer: LogWriter, services: Services) -> None:
        assert self._recorder is not None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._handle_signals, tg)
            await tg.start(writer.run)
            await tg.start(self._recorder.run)
            await services.start(tg)
            ready_after = time.time() - self.started_at
            log.info("agentd ready in %.2fs; NATS at %s", ready_after, self.nats_url)
            agents = len(services.fleet.names) if services.fleet else 0
            self.notifier.ready(f"serving {agents} agents")
            if self.notifier.watchdog_interval_s:
                tg.start_soon(self._watchdog)
            await self._stop.wait()
            await self._shutdown(tg)

    def request_stop(self) -> None:
        self._stop.set()

    async def _shutdown(self, tg: TaskGroup) -> None:
        grace = self.config.daemon.drain_grace_s
        self.notifier.stopping("draining")
        log.info("draining (grace %.1fs)", grace)
        with anyio.move_on_after(grace + 5.0) as scope:
            if self.services is not None:
                await self.services.drain()
        if scope.cancelled_caught:
            log.error("drain did not finish within %.1fs; forcing", grace + 5.0)
            self._force_kill()
        tg.cancel_scope.cancel()
        log.info("stopped")

    def _force_kill(self) -> None:
        if self.services is not None:  # set before any signal is handled
            self.services.force_kill()

    async def _handle_signals(self, tg: TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload()
                elif self._stop.is_set() and signum == signal.SIGINT:
                    log.warning("second SIGINT: forcing exit")
                    self._forced = True
                    self.exit_code = 130
                    self._force_kill()
                    tg.cancel_scope.cancel()
                    return
                else:
                    log.info("%s received: shutting down", signal.Signals(signum).name)
                    self._stop.set()

    def _reload(self) -> None:
        """SIGHUP: apply what can change live (log level, the policy), log what needs a
        restart."""
        try:
            self.authority.reload(operator=None)
        except ConfigError as exc:
            log.error("policy reload rejected, keeping the running policy:\n%s", exc)
        try:
            fresh = load_config(self._loaded.path)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running configuration:\n%s", exc)
            return
        old, new = self.config, fresh.config
        if new.daemon.log_level != old.daemon.log_level:
            logging.getLogger().setLevel(new.daemon.log_level.upper())
            log.info("log level is now %s", new.daemon.log_level)
        live = old.model_copy(
            update={"daemon": old.daemon.model_copy(update={"log_level": new.daemon.log_level})}
        )
        # every other section ([cluster], [checkpoints], ... included) is read at start only
        restart_needed = [
            section
            for section in type(new).model_fields
            if getattr(new, section) != getattr(live, section)
        ]
        for section in restart_needed:
            log.warning("[%s] changed; it takes effect at the next restart", section)
        self.config = live
        if self._recorder is not None:
            self._recorder.record(
                "config.reloaded", decision="reloaded", restart_needed=restart_needed
            )

    async def _watchdog(self) -> None:
        """WATCHDOG=1 from the event loop itself, after a self-check; a wedged loop misses it."""
        interval = self.notifier.watchdog_interval_s or 1.0
        while True:
            if self._healthy():
                self.notifier.watchdog()
            else:
                log.error("self-check failed; withholding the watchdog ping")
            await anyio.sleep(interval)

    def _healthy(self) -> bool:
        nc = self.services.nc if self.services else None
        return nc is not None and not nc.is_closed

    # events and decisions
    async def _observe_records(self, records: Sequence[DecisionRecord | WireRecord]) -> None:
        self.metrics.observe(records)

    async def _on_child_event(self, event: ChildEvent) -> None:
        fleet = self.services.fleet if self.services else None
        await report_child_event(
            event,
            agents=fleet.agents if fleet else {},
            recorder=self._recorder,
            nc=self.services.nc if self.services else None,
            subjects=self.subjects,
        )

    def _record_decision(self, kind: str, **fields: Any) -> None:
        if self._recorder is not None:
            self._recorder.record(kind, **fields)

    def _status(self) -> dict[str, Any]:
        services = self.services
        fleet = services.fleet if services else None
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "nats_url": self.nats_url,
            "llm_url": services.llm.url if services and services.llm else None,
            "mcp_url": (services.mcp_endpoint.url if services and services.mcp_endpoint else None),
            "embedded_nats": self.config.bus.url is None,
            "state_dir": str(self.state_dir),
            "config": self._loaded.source,
            "services": dict(services.states) if services else {},
            "agents": sorted(fleet.names) if fleet else [],
            "spec_errors": fleet.spec_errors if fleet else [],
            "policy": {"mode": self.config.policy.mode, "version": self.authority.version},
            "metrics_url": services.metrics_url() if services else None,
            "cluster": services.cluster.summary() if services and services.cluster else None,
        }


@contextlib.contextmanager
def _unwrap_damaged() -> Iterator[None]:
    """A decision log that does not extend its anchor, or a service that cannot start as
    configured (a port in use: ConfigError naming the key), stops the daemon with that error
    (the command line prints it in one line), not with the task group's exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        damaged, _ = group.split((DecisionLogDamaged, ConfigError))
        if damaged is None:
            raise
        first: BaseException = damaged
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def run_daemon(loaded: LoadedConfig, *, log_format: str | None = None) -> int:
    """Entry point used by `agentd run`."""
    # Everything the daemon writes (decision log, checkpoints, logs, tool data such as the
    # loan ledger, state) is for its own user, whatever umask the caller had; its children
    # inherit this. Files meant for others (the log's public key) set their mode explicitly.
    os.umask(DAEMON_UMASK)
    # and nobody of the same uid without CAP_SYS_PTRACE (a replica) reads its environment or
    # memory through /proc (docs/sandbox.md)
    set_undumpable()
    cfg = loaded.config.daemon
    setup_logging(cfg.log_level, log_format or cfg.log_format)
    daemon = Daemon(loaded)
    return anyio.run(daemon.run, backend_options={"use_uvloop": True})
