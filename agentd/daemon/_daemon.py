"""`agentd run`: the daemon's lifecycle.

capture signals -> start services in dependency order, each ready before the next -> serve ->
drain within the grace period -> force. Signal handlers only set flags (uvicorn's model); a second
SIGINT forces at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import TaskGroup
from nats.aio.client import Client

from agentd.api import RegistrationService
from agentd.bus import (
    Credentials,
    Subjects,
    connect,
    embedded_url,
    ensure_streams,
    nats_server_argv,
    nats_server_config,
    wait_until_listening,
)
from agentd.cluster import Cluster
from agentd.config import LoadedConfig, load_config
from agentd.control import ControlPlane
from agentd.daemon._audit_verbs import AuditVerbs
from agentd.daemon._authority import Authority
from agentd.daemon._autoscaler import Autoscaler
from agentd.daemon._child_events import NATS_CHILD, report_child_event
from agentd.daemon._decision_feed import DecisionFeed
from agentd.daemon._fleet import AgentFleet
from agentd.daemon._identity import DaemonIdentity
from agentd.daemon._llm_tokens import IdentityTokens
from agentd.daemon._logging import setup_logging
from agentd.daemon._recorder import Recorder
from agentd.daemon._spawner import Spawner
from agentd.daemon._statedir import StateDirLock
from agentd.daemon._systemd import SystemdNotifier
from agentd.daemon._verbs import ControlVerbs
from agentd.errors import BusUnavailable, ConfigError, WorkerCrashed
from agentd.gateway import LLMGateway
from agentd.gateway import TokenBook as GatewayTokenBook
from agentd.identity import client_ssl_context, nats_tls_block
from agentd.inference import ModelPools, discover_gpus
from agentd.metrics import AgentdMetrics, MetricsService
from agentd.router import DeadLetters, Router
from agentd.supervisor import ChildEvent, ChildInfo, ChildSpec, RestartPolicy, Supervisor
from agentd.telemetry import TelemetrySettings, setup_telemetry
from agentd.tools import ToolGateway, ToolRegistry
from agentd.trace import DecisionRecord, LogWriter, Redactor, TraceIngest, open_decision_log

__all__ = ["Daemon"]

log = logging.getLogger("agentd.daemon")


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
        self._services: dict[str, str] = {}
        self._nc: Client | None = None
        self._supervisor = Supervisor(
            on_event=self._on_child_event, registry_path=self.state_dir / "children.json"
        )
        # a broken policy stops the start here, before anything runs (PolicyError: file:line)
        self.authority = Authority(self.config.policy)
        self._recorder: Recorder | None = None
        self._router: Router | None = None
        self._control: ControlPlane | None = None
        self._fleet: AgentFleet | None = None
        self._autoscaler: Autoscaler | None = None
        self._tools: ToolGateway | None = None
        self._llm: LLMGateway | None = None
        self._spawner: Spawner | None = None
        # [cluster]: this host's node lease, the placer role, its share of the placement
        self._cluster: Cluster | None = None
        self.metrics = AgentdMetrics()
        self._metrics_service: MetricsService | None = None
        # The model pools ([models.*]); the LLM gateway reads endpoints from it.
        self.pools = ModelPools(
            self.config.models, state_dir=self.state_dir, record=self._record_decision
        )
        # like the policy: a pool that cannot start or be placed stops the start before anything
        # runs
        if missing := self.pools.missing_files():
            raise ConfigError(loaded.source, missing)
        self.pools.check_placement()
        # [checkpoints] backend postgres reads its connection string from the environment: a
        # missing one stops the start here, not in every replica later
        if missing := self.config.checkpoints.environment_problems(os.environ):
            raise ConfigError(loaded.source, missing)
        self._ingest: TraceIngest | None = None
        self._registration: RegistrationService | None = None
        self.nats_url = self.config.bus.url or embedded_url(self.config.bus.embedded)
        if self.config.bus.url is None and self.config.bus.tls.enabled:
            self.nats_url = self.nats_url.replace("nats://", "tls://", 1)
        # who may speak on the bus (docs/identity.md); None: [identity].enabled = false
        self.identity: DaemonIdentity | None = None

    # lifecycle
    async def run(self) -> int:
        with StateDirLock(self.state_dir):
            decision_log = open_decision_log(self.config.trace, self.state_dir)
            # one writer for the log: the daemon's own records and those ingested from workers
            writer = LogWriter(decision_log)
            self._recorder = Recorder(writer)
            self._recorder.add_observer(self._observe_records)
            telemetry = setup_telemetry(
                TelemetrySettings.from_config(self.config.trace),
                service_name="agentd",
                attributes={"service.instance.id": f"{socket.gethostname()}-{os.getpid()}"},
            )
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._handle_signals, tg)
                    await tg.start(writer.run)
                    await tg.start(self._recorder.run)
                    await self._start(tg)
                    ready_after = time.time() - self.started_at
                    log.info("agentd ready in %.2fs; NATS at %s", ready_after, self.nats_url)
                    agents = len(self._fleet.names) if self._fleet else 0
                    self.notifier.ready(f"serving {agents} agents")
                    if self.notifier.watchdog_interval_s:
                        tg.start_soon(self._watchdog)
                    await self._stop.wait()
                    await self._shutdown(tg)
            finally:
                await self._recorder.close()
                # export what is buffered; off the loop, an unreachable collector takes time
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(telemetry.shutdown)
        return self.exit_code

    def request_stop(self) -> None:
        self._stop.set()

    async def _start(self, tg: TaskGroup) -> None:
        self._step("supervisor", "starting")
        await tg.start(self._supervisor.run)
        self._step("supervisor", "running")
        if self.config.identity.enabled:
            self.identity = DaemonIdentity(self.config, self.subjects, self.authority)
        if self.config.bus.url is None:
            self._step("nats", "starting embedded nats-server")
            await self._start_embedded_nats()
            self._step("nats", "running")
        self._step("bus", f"connecting to {self.nats_url}")
        self._nc = nc = await connect(
            self.nats_url,
            name="agentd",
            timeout_s=self.config.bus.connect_timeout_s,
            on_disconnected=self._bus_down,
            on_reconnected=self._bus_up,
            credentials=self._own_credentials(),
            tls=client_ssl_context(self.config.bus.tls),
        )
        js = nc.jetstream()
        await ensure_streams(
            js, self.subjects, self.config.inbox, replicas=self.config.stream_replicas
        )
        self._step("bus", "connected")
        # Before the agents, which call the models. Replicas load in the background (tens of
        # seconds for vLLM): READY does not wait for them; `agentctl models` shows them loading.
        await tg.start(self.pools.run)
        if self.config.models:  # a service line only where pools are configured
            self._step("models", f"{len(self.config.models)} pools")
        recorder = self._recorder
        assert recorder is not None
        # before any replica starts: workers publish their records to the trace stream
        self._ingest = TraceIngest(
            nc,
            self.subjects,
            recorder.writer,
            self.config.trace,
            on_rejected=recorder.record,
            stream_replicas=self.config.stream_replicas,
        )
        await tg.start(self._ingest.run)
        identity = self.identity
        if self.config.gateway.enabled:
            self._llm = LLMGateway(
                self.config.gateway,
                upstreams=self.pools,
                tokens=GatewayTokenBook(),
                record=recorder.record,
                policy=self.authority.check,
            )
            if identity is not None:  # registered agents' tokens: the gateway's book
                identity.tokens = IdentityTokens(self._llm.tokens)
        self._fleet = fleet = AgentFleet(
            nc,
            js,
            self._supervisor,
            self.config,
            self.nats_url,
            recorder,
            issue_credentials=identity.agent_credentials if identity else None,
            revoke_credentials=identity.forget_agent if identity else None,
            llm=self._llm,
        )
        if self.config.cluster.enabled:
            self._cluster = Cluster(
                js,
                self.subjects,
                self.config,
                fleet,
                recorder.record,
                pools=sorted(self.config.models),
                gpus=lambda: [
                    {"index": g.index, "name": g.name, "memory_bytes": g.memory_total_bytes}
                    for g in discover_gpus()
                ],
            )
            fleet.desire = self._cluster.set_desired
        registration = self._registration = (
            identity.registration_service(nc, js, fleet, recorder) if identity else None
        )

        def registered() -> set[str]:
            return registration.names if registration else set()

        self._router = Router(
            nc,
            js,
            self.subjects,
            known_agents=lambda: fleet.names | registered(),
            policy=self.authority,
            on_decision=recorder.record,
        )
        await tg.start(self._router.run)
        self._step("router", "running")
        if self._llm is not None:
            await tg.start(self._llm.run)
            self._step("gateway", "running")
        self._tools = ToolGateway(
            nc,
            js,
            self.subjects,
            point=self.authority.point,
            registry=self._load_tools(),
            allowed_tools=lambda agent: (
                list(fleet.agents[agent].agent.spec.tools)
                if agent in fleet.agents
                else identity.registered_tools(agent)
                if identity
                else None
            ),
            record=recorder.record,
            config=self.config.tools,
            drain_grace_s=self.config.daemon.drain_grace_s,
            stream_replicas=self.config.stream_replicas,
        )
        await tg.start(self._tools.run)
        self._step("tools", "running")
        self.authority.record = recorder.record
        dead_letters = DeadLetters(js, self.subjects)
        self._control = ControlPlane(
            nc,
            self.subjects,
            authorize=identity.authorize if identity else self.authority.authorize_verb,
            authenticate=identity.authenticate if identity else None,
            queue="control" if self._cluster else "",
        )
        if identity is not None:
            identity.fleet, identity.record = fleet, recorder.record
            identity.register_verbs(self._control)
            await tg.start(identity.run)
        ControlVerbs(
            status=self._status,
            fleet=fleet,
            router=self._router,
            dead_letters=dead_letters,
            logs_dir=self.state_dir / "logs",
            authority=self.authority,
            reload_policy=self.authority.reload,
            tools=self._tools,
            pools=self.pools,
            cluster=self._cluster,
        ).register(self._control)
        AuditVerbs(
            decision_log=recorder.log,
            signing_key_file=self.state_dir / self.config.trace.signing_key_file,
            authority=self.authority,
            js=js,
            subjects=self.subjects,
            dead_letters=dead_letters,
        ).register(self._control)
        recorder.add_observer(DecisionFeed(nc, self.subjects, recorder.log.redactor or Redactor()))
        await tg.start(self._control.run)
        self._step("control", "running")
        if registration is not None:  # part of the control service in status
            await tg.start(registration.run)
        self._step("agents", "starting")
        await tg.start(fleet.run)
        self._step("agents", "running")
        if self._cluster is not None:  # the placement decides which agents run here
            await tg.start(self._cluster.run)
            self._step("cluster", f"node {self._cluster.node}")
        if self.config.metrics.enabled:
            self._metrics_service = MetricsService(
                self.config.metrics,
                self.metrics,
                sample=fleet.ps,
                js=js,
                runs_bucket=self.subjects.runs_bucket,
            )
            await tg.start(self._metrics_service.run)

        self._spawner = Spawner(nc, self.subjects, fleet, self.config.agents, recorder)
        await tg.start(self._spawner.run)
        self._autoscaler = Autoscaler(fleet, self.config.autoscale, cluster=self._cluster)
        await tg.start(self._autoscaler.run)
        self._step("autoscaler", "running" if self.config.autoscale.enabled else "disabled")

    def _load_tools(self) -> ToolRegistry:
        """The tools in [tools].dir (none when the folder does not exist). They run in this
        process and find their files through AGENTD_STATE_DIR, as replicas do."""
        os.environ.setdefault("AGENTD_STATE_DIR", str(self.state_dir))
        directory = self.config.tools.dir
        if not directory.is_dir():
            log.info("no tools: %s does not exist", directory)
            return ToolRegistry()
        registry = ToolRegistry.load(directory)
        log.info("tools from %s: %s", directory, ", ".join(sorted(registry.names)) or "none")
        return registry

    async def _start_embedded_nats(self) -> None:
        cfg = self.config.bus.embedded
        store = cfg.store_dir or self.state_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.state_dir / "nats-server.conf"
        tls = nats_tls_block(self.config.bus.tls)
        if self.identity is not None:
            supervisor = self._supervisor

            def server_pid() -> int | None:
                try:
                    return supervisor.info(NATS_CHILD).pid
                except KeyError:
                    return None

            self.identity.attach_server(
                conf,
                lambda auth: nats_server_config(cfg, store, tls + auth),
                server_pid,
                self.nats_url,
            )
        else:
            conf.write_text(nats_server_config(cfg, store, tls))

        async def listening(info: ChildInfo) -> None:
            await wait_until_listening(cfg.host, cfg.port, timeout_s=cfg.ready_timeout_s)

        spec = ChildSpec(
            name=NATS_CHILD,
            argv=nats_server_argv(cfg, conf),
            restart=RestartPolicy(max_restarts=20, window_s=60.0, backoff_initial_s=0.05),
            stop_grace_s=5.0,
            ready=listening,
            ready_timeout_s=cfg.ready_timeout_s,
            log_path=self.state_dir / "logs" / "nats-server.log",
        )
        try:
            await self._supervisor.start(spec)
        except WorkerCrashed as exc:
            raise BusUnavailable(
                f"the embedded nats-server did not start on {cfg.host}:{cfg.port}: {exc}. "
                f"Is the port in use? Set [bus.embedded].port or [bus].url. "
                f"Its log: {self.state_dir / 'logs' / 'nats-server.log'}"
            ) from exc

    def _own_credentials(self) -> Credentials | None:
        if self.config.bus.creds_file is not None:
            return Credentials.load(self.config.bus.creds_file)
        if self.identity is not None and self.config.bus.url is None:
            return self.identity.daemon_credentials
        return None

    async def _shutdown(self, tg: TaskGroup) -> None:
        grace = self.config.daemon.drain_grace_s
        self.notifier.stopping("draining")
        log.info("draining (grace %.1fs)", grace)
        with anyio.move_on_after(grace + 5.0) as scope:
            services = (
                self._autoscaler,
                self._spawner,
                self._metrics_service,
                self._registration,
                self.identity,
            )
            for service in services:
                if service:
                    await service.shutdown()
            if self._cluster:  # the survivors take this host's agents now, not after the TTL
                await self._cluster.leave()
            if self._fleet:
                await self._fleet.shutdown()
            # the ingest after the fleet: replicas flush their last records as they stop
            for plane in (self._llm, self._tools, self._control, self._router, self._ingest):
                if plane:
                    await plane.shutdown()
            await self.pools.shutdown()
            if self._nc is not None:
                await self._nc.drain()
            if self.config.bus.url is None:
                await self._supervisor.stop(NATS_CHILD)
            await self._supervisor.shutdown()
        if scope.cancelled_caught:
            log.error("drain did not finish within %.1fs; forcing", grace + 5.0)
            self._force_kill()
        tg.cancel_scope.cancel()
        log.info("stopped")

    def _force_kill(self) -> None:
        self.pools.force_kill()
        for child in self._supervisor.children():
            if child.pid:
                with contextlib.suppress(OSError):
                    os.killpg(child.pid, signal.SIGKILL)

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
                "x.config.reloaded", decision="reloaded", restart_needed=restart_needed
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
        return self._nc is not None and not self._nc.is_closed

    # events and decisions
    async def _observe_records(self, records: Sequence[DecisionRecord]) -> None:
        self.metrics.observe(records)

    def _step(self, service: str, state: str) -> None:
        self._services[service] = state
        self.notifier.status(f"{service}: {state}")
        log.debug("%s: %s", service, state)

    async def _on_child_event(self, event: ChildEvent) -> None:
        fleet = self._fleet
        await report_child_event(
            event,
            agents=fleet.agents if fleet else {},
            recorder=self._recorder,
            nc=self._nc,
            subjects=self.subjects,
        )

    def _record_decision(self, kind: str, **fields: Any) -> None:
        if self._recorder is not None:
            self._recorder.record(kind, **fields)

    async def _bus_down(self) -> None:
        self._services["bus"] = "reconnecting"
        if self._fleet:
            self._fleet.heartbeats.bus_down()

    async def _bus_up(self) -> None:
        self._services["bus"] = "connected"
        if self._fleet:
            self._fleet.heartbeats.bus_up()

    def _metrics_url(self) -> str | None:
        service = self._metrics_service
        if service is None or service.port is None:
            return None  # disabled, or the port was taken (logged)
        return f"http://{self.config.metrics.host}:{service.port}/metrics"

    def _status(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started_at, 3),
            "nats_url": self.nats_url,
            "llm_url": self._llm.url if self._llm else None,
            "embedded_nats": self.config.bus.url is None,
            "state_dir": str(self.state_dir),
            "config": self._loaded.source,
            "services": dict(self._services),
            "agents": sorted(self._fleet.names) if self._fleet else [],
            "spec_errors": self._fleet.spec_errors if self._fleet else [],
            "policy": {"mode": self.config.policy.mode, "version": self.authority.version},
            "metrics_url": self._metrics_url(),
            "cluster": self._cluster.summary() if self._cluster else None,
        }


def run_daemon(loaded: LoadedConfig, *, log_format: str | None = None) -> int:
    """Entry point used by `agentd run`."""
    cfg = loaded.config.daemon
    setup_logging(cfg.log_level, log_format or cfg.log_format)
    daemon = Daemon(loaded)
    return anyio.run(daemon.run, backend_options={"use_uvloop": True})
