"""The daemon's services, wired in dependency order and drained in the reverse of it.

supervisor -> embedded NATS (when [bus].url is unset) -> the bus and its streams -> model pools ->
trace ingest -> router -> LLM gateway -> tool gateway -> control plane and its verbs ->
registration -> agents -> cluster -> metrics -> spawner -> autoscaler. Draining stops what makes
new work first, then the agents (they finish their runs), then the planes they used, then NATS.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from anyio.abc import TaskGroup
from nats.aio.client import Client

from agentd.api import RegistrationService
from agentd.bus import (
    Credentials,
    Subjects,
    connect,
    ensure_streams,
    jetstream,
)
from agentd.cluster import Cluster
from agentd.config import Config
from agentd.control import ControlPlane
from agentd.daemon._audit_verbs import AuditVerbs
from agentd.daemon._authority import Authority
from agentd.daemon._autoscaler import Autoscaler
from agentd.daemon._child_events import NATS_CHILD
from agentd.daemon._decision_feed import DecisionFeed
from agentd.daemon._embedded_nats import start_embedded_nats
from agentd.daemon._fleet import AgentFleet
from agentd.daemon._identity import DaemonIdentity
from agentd.daemon._llm_tokens import IdentityTokens
from agentd.daemon._log_anchor import LogAnchor, build_log_anchor
from agentd.daemon._mcp_servers import McpServers
from agentd.daemon._recorder import Recorder
from agentd.daemon._sandbox import host_abi
from agentd.daemon._spawner import Spawner
from agentd.daemon._systemd import SystemdNotifier
from agentd.daemon._token_verbs import TokenVerbs
from agentd.daemon._tool_sandbox import tool_sandboxes
from agentd.daemon._verbs import ControlVerbs
from agentd.gateway import LLMGateway, TokenBucket, TokenBudgets, open_budget_store
from agentd.gateway import TokenBook as GatewayTokenBook
from agentd.identity import client_ssl_context
from agentd.inference import ModelPools, discover_gpus
from agentd.metrics import AgentdMetrics, MetricsService
from agentd.router import DeadLetters, ReplyRelay, Router
from agentd.supervisor import Supervisor, signal_group
from agentd.tools import TaintBook, ToolGateway, ToolRegistry
from agentd.trace import Redactor, TraceIngest

if TYPE_CHECKING:  # the MCP SDK and uvicorn are imported only where the endpoint is on
    from agentd.tools import McpEndpoint

__all__ = ["Services"]

log = logging.getLogger("agentd.daemon")

# an agent without a spec here (registered from outside): the spec's default run_timeout_s
DEFAULT_TAINT_WINDOW_S = 300.0


class Services:
    """Every service of one running daemon; each attribute is None until started."""

    def __init__(
        self,
        config: Config,
        *,
        supervisor: Supervisor,
        authority: Authority,
        pools: ModelPools,
        recorder: Recorder,
        metrics: AgentdMetrics,
        notifier: SystemdNotifier,
        nats_url: str,
        status: Callable[[], dict[str, Any]],
    ) -> None:
        self.config = config
        self.subjects = Subjects(config.bus.prefix)
        self.state_dir = config.daemon.state_dir
        self.supervisor = supervisor
        self.authority = authority
        self.pools = pools
        self.recorder = recorder
        self.metrics = metrics
        self.notifier = notifier
        self.nats_url = nats_url
        self._status = status
        self.states: dict[str, str] = {}  # service -> state, for `agentctl status`
        self.nc: Client | None = None
        # who may speak on the bus (docs/identity.md); None: [identity].enabled = false
        self.identity: DaemonIdentity | None = None
        self.ingest: TraceIngest | None = None
        self.anchor: LogAnchor | None = None
        self.llm: LLMGateway | None = None
        self.outside_tokens: TokenBucket | None = None  # agentctl tokens, with the gateway
        self.fleet: AgentFleet | None = None
        # [cluster]: this host's node lease, the placer role, its share of the placement
        self.cluster: Cluster | None = None
        self.registration: RegistrationService | None = None
        self.router: Router | None = None
        self.dead_letters: DeadLetters | None = None
        self.replies: ReplyRelay | None = None
        self.tools: ToolGateway | None = None
        self.mcp_endpoint: McpEndpoint | None = None  # [tools.mcp_endpoint]: off unless enabled
        self.mcp_servers: McpServers | None = None
        self.taint: TaintBook | None = None
        self.control: ControlPlane | None = None
        self.metrics_service: MetricsService | None = None
        self.spawner: Spawner | None = None
        self.autoscaler: Autoscaler | None = None

    def step(self, service: str, state: str) -> None:
        self.states[service] = state
        self.notifier.status(f"{service}: {state}")
        log.debug("%s: %s", service, state)

    async def start(self, tg: TaskGroup) -> None:
        """Start every service in dependency order, each ready before the next."""
        self.step("supervisor", "starting")
        await tg.start(self.supervisor.run)
        self.step("supervisor", "running")
        if self.config.identity.enabled:
            self.identity = DaemonIdentity(self.config, self.subjects, self.authority)
        if self.config.bus.url is None:
            self.step("nats", "starting embedded nats-server")
            await start_embedded_nats(self.config, self.supervisor, self.identity, self.nats_url)
            self.step("nats", "running")
        self.step("bus", f"connecting to {self.nats_url}")
        self.nc = nc = await connect(
            self.nats_url,
            name="agentd",
            timeout_s=self.config.bus.connect_timeout_s,
            on_disconnected=self._bus_down,
            on_reconnected=self._bus_up,
            credentials=self._own_credentials(),
            tls=client_ssl_context(self.config.bus.tls),
        )
        js = jetstream(nc)
        await ensure_streams(
            js, self.subjects, self.config.inbox, replicas=self.config.stream_replicas
        )
        self.step("bus", "connected")
        # Before the agents, which call the models. Replicas load in the background (tens of
        # seconds for vLLM): READY does not wait for them; `agentctl models` shows them loading.
        await tg.start(self.pools.run)
        if self.config.models:  # a service line only where pools are configured
            self.step("models", f"{len(self.config.models)} pools")
        recorder = self.recorder
        if self.config.trace.anchor:
            # before anything is ingested: a log that does not extend the checkpoint published
            # outside it stops the start here (DecisionLogDamaged), signing nothing over it
            self.anchor = build_log_anchor(
                self.config, js, self.subjects, recorder.writer, self.state_dir
            )
            await tg.start(self.anchor.run)
            self.step("anchor", "decision log anchored")  # `agentctl status` shows it
        # before any replica starts: workers publish their records to the trace stream
        self.ingest = TraceIngest(
            nc,
            self.subjects,
            recorder.writer,
            self.config.trace,
            on_rejected=recorder.record,
            stream_replicas=self.config.stream_replicas,
        )
        await tg.start(self.ingest.run)
        identity = self.identity
        if self.config.gateway.enabled:
            point = self.authority.point
            budgets = None
            if point is not None:  # limits.toml's model limits (read per call: a reload
                # applies at once); their buckets in KV: kept across restarts, cluster-wide
                store = await open_budget_store(
                    js, self.subjects.budgets_bucket, replicas=self.config.stream_replicas
                )
                budgets = TokenBudgets(point.limiter.token_limit, store)
            self.llm = LLMGateway(
                self.config.gateway,
                upstreams=self.pools,
                tokens=GatewayTokenBook(),
                record=recorder.record,
                policy=self.authority.check,
                budgets=budgets,
            )
            if identity is not None:  # registered agents' tokens: the gateway's book
                identity.tokens = IdentityTokens(self.llm.tokens)
            # outside clients' tokens (agentctl tokens): the same book, kept in a KV bucket
            self.outside_tokens = TokenBucket(self.llm.tokens)
            await tg.start(
                functools.partial(
                    self.outside_tokens.run,
                    js,
                    self.subjects.tokens_bucket,
                    replicas=self.config.stream_replicas,
                )
            )
        self.fleet = fleet = AgentFleet(
            nc,
            js,
            self.supervisor,
            self.config,
            self.nats_url,
            recorder,
            issue_credentials=identity.agent_credentials if identity else None,
            revoke_credentials=identity.forget_agent if identity else None,
            llm=self.llm,
        )
        if self.config.cluster.enabled:
            self.cluster = Cluster(
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
            fleet.desire = self.cluster.set_desired
        registration = self.registration = (
            identity.registration_service(nc, js, fleet, recorder) if identity else None
        )

        def registered() -> set[str]:
            return registration.names if registration else set()

        taint = self.taint = TaintBook(
            window_of=self._taint_window, ttl_s=self.config.tools.taint_ttl_s
        )
        await tg.start(
            functools.partial(
                taint.run, js, self.subjects.taint_bucket, replicas=self.config.stream_replicas
            )
        )
        self.router = Router(
            nc,
            js,
            self.subjects,
            known_agents=lambda: fleet.names | registered(),
            policy=self.authority,
            on_decision=recorder.record,
            taint=taint,
            policy_subject=identity.policy_subject if identity else None,
        )
        await tg.start(self.router.run)
        dead_letters = self.dead_letters = DeadLetters(
            nc, js, self.subjects, router=self.router, record=recorder.record
        )
        await tg.start(dead_letters.run)
        if identity is not None:  # replies cross NATS accounts through the daemon
            self.replies = ReplyRelay(nc, self.subjects, taint=taint)
            await tg.start(self.replies.run)
        self.step("router", "running")
        if self.llm is not None:
            await tg.start(self.llm.run)
            self.step("gateway", "running")
        registry = self._load_tools()

        def allowed_tools(agent: str) -> list[str] | None:
            if agent in fleet.agents:
                return list(fleet.agents[agent].agent.spec.tools)
            return identity.registered_tools(agent) if identity else None

        self.tools = ToolGateway(
            nc,
            js,
            self.subjects,
            point=self.authority.point,
            registry=registry,
            allowed_tools=allowed_tools,
            record=recorder.record,
            config=self.config.tools,
            drain_grace_s=self.config.daemon.drain_grace_s,
            stream_replicas=self.config.stream_replicas,
            taint=taint,
            # isolated tools run sandboxed as replicas do (docs/sandbox.md, "Isolated tools")
            sandboxes=tool_sandboxes(self.config, registry, abi=host_abi()),
            policy_subject=identity.policy_subject if identity else None,
        )
        # MCP servers' tools join the registry as `<server>.<tool>` (agentd/tools/README.md)
        self.mcp_servers = McpServers(self.config, self.supervisor, registry, abi=host_abi())
        await tg.start(self.mcp_servers.run)
        await tg.start(self.tools.run)
        self.step("tools", "running")
        if self.config.tools.mcp_endpoint.enabled:  # outside MCP clients, as their agents
            from agentd.daemon._mcp_endpoint import build_mcp_endpoint  # SDK + uvicorn: ~0.9 s

            self.mcp_endpoint = build_mcp_endpoint(
                self.config,
                nc,
                self.subjects,
                registry=registry,
                allowed_tools=allowed_tools,
                llm=self.llm,
                identity=identity,
                record=recorder.record,
            )
            await tg.start(self.mcp_endpoint.run)
            self.step("mcp", f"listening on {self.mcp_endpoint.url}")
        self.authority.record = recorder.record
        self.control = ControlPlane(
            nc,
            self.subjects,
            authorize=identity.authorize if identity else self.authority.authorize_verb,
            authenticate=identity.authenticate if identity else None,
            queue="control" if self.cluster else "",
        )
        if identity is not None:
            identity.fleet, identity.record = fleet, recorder.record
            identity.register_verbs(self.control)
            await tg.start(identity.run)
        ControlVerbs(
            status=self._status,
            fleet=fleet,
            router=self.router,
            dead_letters=dead_letters,
            logs_dir=self.state_dir / "logs",
            authority=self.authority,
            reload_policy=self.authority.reload,
            tools=self.tools,
            pools=self.pools,
            cluster=self.cluster,
            autoscale=self.config.autoscale,
            recorder=recorder,
        ).register(self.control)
        AuditVerbs(
            decision_log=recorder.log,
            signing_key_file=self.state_dir / self.config.trace.signing_key_file,
            authority=self.authority,
            js=js,
            subjects=self.subjects,
            dead_letters=dead_letters,
            witnessed=self.anchor.witnessed if self.anchor is not None else None,
        ).register(self.control)
        TokenVerbs(
            self.outside_tokens,
            pools=self.pools.pool_names,
            authority=self.authority,
            record=recorder.record,
        ).register(self.control)
        recorder.add_observer(DecisionFeed(nc, self.subjects, recorder.log.redactor or Redactor()))
        await tg.start(self.control.run)
        self.step("control", "running")
        if registration is not None:  # part of the control service in status
            await tg.start(registration.run)
        self.step("agents", "starting")
        await tg.start(fleet.run)
        self.step("agents", "running")
        if self.cluster is not None:  # the placement decides which agents run here
            await tg.start(self.cluster.run)
            self.step("cluster", f"node {self.cluster.node}")
        if self.config.metrics.enabled:
            self.metrics_service = MetricsService(
                self.config.metrics,
                self.metrics,
                sample=fleet.ps,
            )
            await tg.start(self.metrics_service.run)

        self.spawner = Spawner(
            nc,
            self.subjects,
            fleet,
            self.config.agents,
            recorder,
            policy=self.authority,
            taint=self.taint,
        )
        await tg.start(self.spawner.run)
        self.autoscaler = Autoscaler(fleet, self.config.autoscale, cluster=self.cluster)
        await tg.start(self.autoscaler.run)
        self.step("autoscaler", "running" if self.config.autoscale.enabled else "disabled")

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

    def _taint_window(self, agent: str) -> float:
        """How long `agent` stays tainted after untrusted content ([tools].taint_window_s, else
        its spec's run_timeout_s: the run that received it may last that long)."""
        if self.config.tools.taint_window_s is not None:
            return self.config.tools.taint_window_s
        fleet = self.fleet
        if fleet is not None and agent in fleet.agents:
            return fleet.agents[agent].agent.spec.run_timeout_s
        return DEFAULT_TAINT_WINDOW_S

    def _own_credentials(self) -> Credentials | None:
        if self.config.bus.creds_file is not None:
            return Credentials.load(self.config.bus.creds_file)
        if self.identity is not None and self.config.bus.url is None:
            return self.identity.daemon_credentials
        return None

    async def drain(self) -> None:
        """Stop every service: what makes new work first, then the agents (they finish their
        runs), then the planes they used, the pools, the bus and the supervisor."""
        for service in (
            self.autoscaler,
            self.spawner,
            self.metrics_service,
            self.mcp_endpoint,
            self.registration,
            self.identity,
        ):
            if service:
                await service.shutdown()
        if self.cluster:  # the survivors take this host's agents now, not after the TTL
            await self.cluster.leave()
        if self.fleet:
            await self.fleet.shutdown()
        # the ingest after the fleet: replicas flush their last records as they stop
        for plane in (
            self.llm,
            self.tools,
            self.mcp_servers,
            self.control,
            self.router,
            self.dead_letters,
            self.replies,
            self.taint,
            self.outside_tokens,
            self.ingest,
        ):
            if plane:
                await plane.shutdown()
        await self.pools.shutdown()
        if self.nc is not None:
            await self.nc.drain()
        if self.config.bus.url is None:
            await self.supervisor.stop(NATS_CHILD)
        await self.supervisor.shutdown()

    def force_kill(self) -> None:
        self.pools.force_kill()
        for child in self.supervisor.children():
            if child.pid:
                signal_group(child.pid, signal.SIGKILL)

    async def _bus_down(self) -> None:
        self.states["bus"] = "reconnecting"
        if self.fleet:
            self.fleet.heartbeats.bus_down()

    async def _bus_up(self) -> None:
        self.states["bus"] = "connected"
        if self.fleet:
            self.fleet.heartbeats.bus_up()

    def metrics_url(self) -> str | None:
        service = self.metrics_service
        if service is None or service.port is None:
            return None  # disabled, or the port was taken (logged)
        return f"http://{self.config.metrics.host}:{service.port}/metrics"
