"""The daemon's configuration: frozen, validated models, one section per service.

Durations end in `_s`, sizes in `_bytes`. Every model forbids unknown keys so a typo in
agentd.toml is an error, not a silently ignored setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from agentd.config._budget_migration import reject_old_budget_keys
from agentd.config._checkpoints import CheckpointsConfig
from agentd.config._cluster import ClusterConfig
from agentd.config._mcp import MCP_SERVER_NAME, McpServerConfig
from agentd.config._mcp_endpoint import McpEndpointConfig
from agentd.config._model_pools import (
    LauncherConfig,
    ModelLivenessConfig,
    ModelPoolConfig,
    PoolAutoscaleConfig,
    PoolName,
    PoolReplicasConfig,
)
from agentd.config._sandbox import SandboxConfig
from agentd.config._section import _Section

__all__ = [
    "AgentsConfig",
    "AutoscaleConfig",
    "BusConfig",
    "ClusterConfig",
    "Config",
    "DaemonConfig",
    "EmbeddedNatsConfig",
    "IdentityConfig",
    "GatewayConfig",
    "InboxConfig",
    "MetricsConfig",
    "OtlpConfig",
    "LauncherConfig",
    "ModelLivenessConfig",
    "ModelPoolConfig",
    "PolicyConfig",
    "PoolAutoscaleConfig",
    "PoolReplicasConfig",
    "TlsConfig",
    "ToolsConfig",
    "TraceConfig",
    "WitnessConfig",
]

_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class DaemonConfig(_Section):
    """[daemon]: process-wide settings."""

    state_dir: Path = Path(".agentd")
    drain_grace_s: float = Field(10.0, gt=0, le=3600)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["human", "json"] = "human"


class EmbeddedNatsConfig(_Section):
    """[bus.embedded]: the nats-server agentd starts when [bus].url is unset."""

    host: str = "127.0.0.1"
    port: int = Field(4222, ge=1, le=65535)
    binary: Path | None = None
    store_dir: Path | None = None
    ready_timeout_s: float = Field(15.0, gt=0)
    sync_always: bool = False

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        if host not in {"127.0.0.1", "localhost", "::1"}:
            raise ValueError(
                "the embedded nats-server listens on loopback only; "
                "set [bus].url to use a NATS server reachable from other hosts"
            )
        return host


class TlsConfig(_Section):
    """[bus.tls] (and a gateway's TLS): certificate and key of the server side, and the CA that
    clients trust. Off unless `cert_file` and `key_file` are set; loopback does not need it."""

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return self


class BusConfig(_Section):
    """[bus]: how agentd reaches NATS."""

    url: str | None = None
    # credentials of the daemon's own connection to an external NATS ([bus].url)
    creds_file: Path | None = None
    tls: TlsConfig = TlsConfig()
    prefix: str = "agentd"
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(5.0, gt=0)
    embedded: EmbeddedNatsConfig = EmbeddedNatsConfig()

    @field_validator("url")
    @classmethod
    def _nats_url(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        for part in url.split(","):
            if not part.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"{part.strip()!r} is not a NATS URL (nats://host:port)")
        return url

    @field_validator("prefix")
    @classmethod
    def _subject_prefix(cls, prefix: str) -> str:
        if not _PREFIX.match(prefix):
            raise ValueError(
                "must be NATS subject tokens (letters, digits, _ and -, dot-separated)"
            )
        return prefix


class InboxConfig(_Section):
    """[inbox]: the JetStream stream that holds every agent's inbox."""

    max_deliver: int = Field(5, ge=1, le=1000)
    ack_wait_s: float = Field(30.0, gt=0)
    duplicate_window_s: float = Field(120.0, gt=0)
    max_age_s: float = Field(7 * 24 * 3600.0, gt=0)


class AgentsConfig(_Section):
    """[agents]: where agent specs live and which run."""

    dir: Path = Path("agents")
    enabled: list[str] | None = None
    heartbeat_s: float = Field(1.0, gt=0, le=60)
    ready_timeout_s: float = Field(60.0, gt=0)
    max_spawned: int = Field(32, ge=0, le=1024)


class AutoscaleConfig(_Section):
    """[autoscale]: scaling agents between their min and max replicas on their backlog."""

    enabled: bool = True
    interval_s: float = Field(2.0, gt=0)
    cooldown_s: float = Field(10.0, ge=0)
    scale_up_at: float = Field(1.0, gt=0)
    scale_down_at: float = Field(0.3, ge=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> AutoscaleConfig:
        if self.scale_down_at >= self.scale_up_at:
            raise ValueError("scale_down_at must be below scale_up_at (hysteresis)")
        return self


class OtlpConfig(_Section):
    """[trace.otlp]: OpenTelemetry span export over OTLP/HTTP (protobuf); off by default.

    `endpoint` is the collector's base URL (`/v1/traces` is appended unless it is already
    there); `headers` go with every export (e.g. an API key); `export_interval_s` is the batch
    processor's delay between exports; `capture_content` adds the opt-in GenAI content
    attributes (messages, tool arguments and results), redacted with [trace].redact_patterns.
    """

    enabled: bool = False
    endpoint: str = "http://127.0.0.1:4318"
    protocol: str = "http/protobuf"
    headers: dict[str, str] = {}
    timeout_s: float = Field(10.0, gt=0, le=300)
    export_interval_s: float = Field(5.0, gt=0, le=300)
    capture_content: bool = False

    @field_validator("protocol")
    @classmethod
    def _http_protobuf_only(cls, protocol: str) -> str:
        if protocol != "http/protobuf":
            raise ValueError(
                f"protocol {protocol!r} is not supported: agentd exports OTLP over HTTP with "
                'protobuf only (protocol = "http/protobuf", a collector\'s port 4318); gRPC '
                "would need opentelemetry-exporter-otlp-proto-grpc, which agentd does not ship"
            )
        return protocol

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, endpoint: str) -> str:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"{endpoint!r} is not an http:// or https:// URL")
        return endpoint


class WitnessConfig(_Section):
    """[trace.witness]: where signed checkpoints of the decision log are published besides the
    daemon's own anchor (see docs/audit.md, "Anchoring"), so that deleting them from the log
    file, or rewriting records they cover, is detected by `agentctl audit verify`.

    `file`: a JSON-lines file, one checkpoint per line, appended and synced; put it on another
    mount (a network share, a disk the agents cannot write). `stream`: a JetStream stream
    (`<PREFIX>_WITNESS`, subject `<prefix>.witness.<node>`, `[cluster].stream_replicas`
    replicas in a cluster: on other hosts).
    """

    file: Path | None = None
    stream: bool = False


class TraceConfig(_Section):
    """[trace]: the durable, hash-chained decision log under the state directory, and the
    OpenTelemetry export ([trace.otlp])."""

    log_file: str = "decisions.db"
    signing_key_file: str = "decision-log.key"
    checkpoint_every: int = Field(default=1000, ge=1)
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    redact_patterns: tuple[str, ...] = ()
    max_inline_bytes: int = Field(default=16384, ge=64)
    retention_max_age_s: float | None = Field(default=None, gt=0)
    retention_max_records: int | None = Field(default=None, ge=1)
    otlp: OtlpConfig = OtlpConfig()
    # the durable path from workers: the AGENTD_TRACE stream and the daemon's ingest of it
    ingest_batch: int = Field(default=256, ge=1, le=4096)
    """Messages fetched at a time (one or more records each); their records are written in
    one transaction."""
    ingest_ack_wait_s: float = Field(default=30.0, gt=0)
    """A fetched record not acked by then (the daemon died) is delivered again."""
    stream_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    """Backlog the stream holds while the daemon is behind; publishers retry when it is full."""
    stream_max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    stream_duplicate_window_s: float = Field(default=120.0, gt=0)
    anchor: bool = True
    """Keep the last signed checkpoint outside the log file (the daemon's JetStream key-value
    bucket) and refuse to extend a log that does not extend it."""
    checkpoint_interval_s: float = Field(default=60.0, gt=0)
    """Sign a checkpoint at least this often while records arrive (published when `anchor`),
    anchored or not: the bound on how long the newest records rest on the hash chain alone."""
    witness: WitnessConfig = WitnessConfig()
    max_clock_skew_s: float = Field(default=300.0, gt=0)
    """An agent's record dated further than this from the time the trace stream stored it is
    refused (a `trace.rejected` record says so)."""

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redact pattern {pattern!r} is not a regex: {exc}") from exc
            if compiled.search(""):
                raise ValueError(f"redact pattern {pattern!r} matches the empty string")
        return patterns


class PolicyConfig(_Section):
    """[policy]: the Casbin decision point every enforcement point asks."""

    mode: Literal["enforce", "off"] = "enforce"
    dir: Path = Path("policies")


class ToolOverride(_Section):
    """[tools.overrides."<tool>"]: what the operator says about one tool, over its declaration."""

    timeout_s: float | None = Field(None, gt=0)
    max_running: int | None = Field(None, ge=1)
    isolated: bool | None = None
    """true: each call in a child process killed at its deadline; false: in the daemon."""
    trust: Literal["trusted", "untrusted"] | None = None
    """untrusted: the tool's results taint the run that receives them (agentd/tools, Taint)."""
    read: list[str] | None = None
    """An isolated call's sandbox: paths it may read, replacing the tool's `read` ($VAR
    expands; relative to [tools].dir; none may point into the state directory's secrets)."""
    write: list[str] | None = None
    """Paths it may write, replacing the tool's `write` (a missing one is created as a folder)."""
    connect_ports: list[Annotated[int, Field(ge=1, le=65535)]] | None = None
    """TCP ports it may connect to, replacing the tool's `connect_ports`."""


class ToolsConfig(_Section):
    """[tools]: the tool gateway and the tools it runs for agents.

    Calls running at once are bounded per agent (all tools) and per tool (all agents; a tool's
    `max_running` replaces the default); a call over a bound is refused (`rate_limited`,
    retryable), never queued.
    """

    dir: Path = Path("tools")
    call_timeout_s: float = Field(30.0, gt=0)
    approval_timeout_s: float = Field(300.0, gt=0)
    approval_ttl_s: float = Field(600.0, gt=0)
    results_ttl_s: float = Field(7 * 24 * 3600.0, gt=0)
    max_running_per_agent: int = Field(16, ge=1)
    max_running_per_tool: int = Field(32, ge=1)
    taint_window_s: float | None = Field(None, ge=0)
    """How long an agent that received untrusted content stays tainted whatever run or
    conversation it names; None: its spec's run_timeout_s; 0: only that conversation."""
    taint_ttl_s: float = Field(30 * 24 * 3600.0, gt=0)
    """How long tainted conversations and messages are remembered (KV `<prefix>_taint`)."""
    overrides: dict[str, ToolOverride] = {}
    mcp: dict[str, McpServerConfig] = {}
    """MCP servers whose tools become `<server>.<tool>` (agentd/tools/README.md, "MCP servers")."""

    @field_validator("mcp")
    @classmethod
    def _mcp_server_names(cls, servers: dict[str, McpServerConfig]) -> dict[str, McpServerConfig]:
        for name in servers:
            if not MCP_SERVER_NAME.match(name):
                raise ValueError(
                    f"[tools.mcp.{name}]: a server name is letters, digits, _ and -, "
                    "dot-separated (it starts the names of its tools)"
                )
        return servers

    mcp_endpoint: McpEndpointConfig = McpEndpointConfig()
    """agentd's governed tools as an MCP server for outside clients (off by default)."""


class MetricsConfig(_Section):
    """[metrics]: agentd's own Prometheus endpoint (http://host:port/metrics)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    """0 picks a free port (logged at startup)."""
    sample_interval_s: float = Field(2.0, gt=0, le=300)
    """How often replicas by state and inbox backlog are sampled."""


class IdentityConfig(_Section):
    """[identity]: who may speak on the bus (see docs/identity.md).

    With `enabled`, the embedded nats-server requires credentials: each agent, operator and
    registered external agent gets its own, with permissions scoped to its own subjects, and
    control requests are signed by the operator's key. Files live under `<state_dir>/credentials`.
    """

    enabled: bool = True
    # the registration API's bootstrap token; created (mode 0600) if missing
    bootstrap_token_file: Path = Path("credentials/bootstrap.token")
    # a registered agent's lease: heartbeats renew it; a lapsed one is revoked
    lease_s: float = Field(30.0, gt=0, le=86400)
    lease_check_s: float = Field(0.25, gt=0, le=60)


class GatewayConfig(_Section):
    """[gateway]: the OpenAI-compatible LLM gateway agents reach their model pools through.

    `port` 0 (the default) takes a free port: the daemon's own replicas are told the URL; set a
    fixed port for clients outside the daemon. Token budgets per agent and pool are the policy's
    limits.toml `model = ...` limits (the old `budget_*` keys are refused with the entries to
    write there). A call reserves the most it may generate: its sequences (prompts x max(n,
    best_of)) x max_tokens, `default_max_tokens` when it names none; more than
    `max_sequences_per_call` sequences is refused (400).
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    default_max_tokens: int = Field(512, ge=1)
    max_sequences_per_call: int = Field(64, ge=1)
    load_factor: float = Field(1.25, ge=1.0, le=10.0)
    max_attempts: int = Field(3, ge=1, le=10)
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(600.0, gt=0)
    max_request_bytes: int = Field(16 * 2**20, ge=1024)
    tls: TlsConfig = TlsConfig()
    """HTTPS with this certificate and key; replicas are told `ca_file` (AGENTD_LLM_CA_FILE)."""

    @model_validator(mode="before")
    @classmethod
    def _old_budget_keys(cls, data: object) -> object:
        return reject_old_budget_keys(data)  # a migration message, not silent loss


class Config(_Section):
    """The whole of agentd.toml. `source` is the file it came from (not a TOML key)."""

    daemon: DaemonConfig = DaemonConfig()
    bus: BusConfig = BusConfig()
    inbox: InboxConfig = InboxConfig()
    agents: AgentsConfig = AgentsConfig()
    autoscale: AutoscaleConfig = AutoscaleConfig()
    trace: TraceConfig = TraceConfig()
    checkpoints: CheckpointsConfig = CheckpointsConfig()
    policy: PolicyConfig = PolicyConfig()
    tools: ToolsConfig = ToolsConfig()
    metrics: MetricsConfig = MetricsConfig()
    models: dict[PoolName, ModelPoolConfig] = {}
    identity: IdentityConfig = IdentityConfig()
    gateway: GatewayConfig = GatewayConfig()
    cluster: ClusterConfig = ClusterConfig()
    sandbox: SandboxConfig = SandboxConfig()

    @model_validator(mode="after")
    def _cluster_needs_a_shared_bus(self) -> Config:
        if self.cluster.enabled and self.bus.url is None:
            raise ValueError(
                "[cluster].enabled needs [bus].url: the hosts of a cluster share one NATS "
                "cluster, not each its own embedded server"
            )
        return self

    @model_validator(mode="after")
    def _mcp_endpoint_needs_tokens(self) -> Config:
        endpoint = self.tools.mcp_endpoint
        if endpoint.enabled and not (self.gateway.enabled or self.identity.enabled):
            raise ValueError(
                "[tools.mcp_endpoint].enabled needs [gateway].enabled or [identity].enabled: "
                "its callers authenticate with the tokens those issue (replicas, registered agents)"
            )
        return self

    @property
    def stream_replicas(self) -> int:
        """JetStream replicas of agentd's streams and buckets: 1 on one host."""
        return self.cluster.stream_replicas if self.cluster.enabled else 1
